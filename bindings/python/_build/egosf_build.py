"""A PEP 517 build backend for egosf using the standard library only.

egosf is pure Python (it loads libegosf.so with ctypes), so its wheel is a
zip of the package plus metadata. Building it here, instead of with
setuptools, lets ``pip install bindings/python`` work offline: pip's build
isolation installs ``[build-system] requires`` (empty) and nothing else.

The project's name, version, description and Python requirement are read
from pyproject.toml (tomllib on Python >= 3.11, a minimal reader of the
few keys used otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "egosf"
# Files of the package put into the wheel: sources and the typing marker.
PACKAGE_FILES = (".py", "py.typed")
# The library itself, when placed next to the package (optional).
BUNDLED_LIBRARY = "libegosf.so"


def _project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        data = f.read()
    try:
        import tomllib

        return tomllib.loads(data.decode())["project"]
    except ImportError:  # Python < 3.11: the [project] keys used are plain strings
        project, section = {}, None
        for line in data.decode().splitlines():
            m = re.match(r"^\[(.+)\]\s*$", line)
            if m:
                section = m.group(1)
                continue
            m = re.match(r'^(\w[\w-]*)\s*=\s*"(.*)"\s*$', line)
            if section == "project" and m:
                project[m.group(1)] = m.group(2)
        return project


def _metadata(project: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
    ]
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    readme = os.path.join(ROOT, "README.md")
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            return "\n".join(lines) + "\n\n" + f.read()
    return "\n".join(lines) + "\n"


def _dist_info(project: dict) -> str:
    return f"{project['name']}-{project['version']}.dist-info"


def _package_files() -> list[str]:
    pkg = os.path.join(ROOT, PACKAGE)
    files = [
        n
        for n in sorted(os.listdir(pkg))
        if n.endswith(PACKAGE_FILES) or n == BUNDLED_LIBRARY
    ]
    if "__init__.py" not in files:
        raise RuntimeError(f"{pkg} has no __init__.py")
    return [f"{PACKAGE}/{n}" for n in files]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"{name},sha256={digest.decode()},{len(data)}"


def _wheel_name(project: dict) -> str:
    return f"{project['name']}-{project['version']}-py3-none-any.whl"


# ---- PEP 517 hooks ----


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    project = _project()
    d = os.path.join(metadata_directory, _dist_info(project))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata(project))
    return _dist_info(project)


def _write_wheel(wheel_directory: str, files: list[tuple[str, bytes]]) -> str:
    project = _project()
    info = _dist_info(project)
    files = files + [
        (f"{info}/METADATA", _metadata(project).encode()),
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: egosf_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
    ]
    record = [_record_line(n, d) for n, d in files] + [f"{info}/RECORD,,"]
    files.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    name = _wheel_name(project)
    # Fixed timestamps: the same sources give the same wheel.
    stamp = time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")))[:6]
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files:
            zi = zipfile.ZipInfo(n, date_time=stamp)
            zi.external_attr = 0o644 << 16
            z.writestr(zi, d, compress_type=zipfile.ZIP_DEFLATED)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = []
    for rel in _package_files():
        with open(os.path.join(ROOT, rel), "rb") as f:
            files.append((rel, f.read()))
    return _write_wheel(wheel_directory, files)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """An editable install: a .pth file putting the source tree on sys.path."""
    return _write_wheel(wheel_directory, [(f"{PACKAGE}_editable.pth", (ROOT + "\n").encode())])


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_sdist(sdist_directory, config_settings=None):
    project = _project()
    base = f"{project['name']}-{project['version']}"
    name = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for rel in ["pyproject.toml", "README.md", "_build/egosf_build.py", *_package_files()]:
            path = os.path.join(ROOT, rel)
            if os.path.exists(path):
                tar.add(path, arcname=f"{base}/{rel}")
        pkg_info = io.BytesIO(_metadata(project).encode())
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size = len(pkg_info.getvalue())
        tar.addfile(ti, pkg_info)
    return name
