"""Tests of the egosf package against the real libegosf and a static pool.

Run: EGOSF_LIBRARY=/path/to/libegosf.so /usr/bin/python3 -m pytest bindings/python/tests
(bindings/c's Go test runs them on an installed copy, from `make test`).
"""

import os
import re
import threading
from pathlib import Path

import pytest

import egosf

HEADER = Path(__file__).resolve().parents[2] / "c" / "egosf.h"


@pytest.fixture
def pool(tmp_path):
    p = tmp_path / "pool.yaml"
    p.write_text(
        f"state_dir: {tmp_path}/state\nallocator:\n  static:\n    hosts:\n"
        "      - {name: h1, address: 10.0.0.1, slots: 2}\n      - {name: h2, address: 10.0.0.2, slots: 2}\n"
    )
    return str(p)


@pytest.fixture
def handle(pool):
    with egosf.Handle(pool) as h:
        yield h


@pytest.fixture
def no_agent(tmp_path, monkeypatch):
    monkeypatch.setenv("SF_GUEST_SOCKET", str(tmp_path / "no-agent.sock"))


def test_library_is_loaded_from_env():
    assert os.environ.get("EGOSF_LIBRARY"), "set EGOSF_LIBRARY to the libegosf.so under test"
    assert egosf.candidates() == [os.environ["EGOSF_LIBRARY"]]


def test_every_code_has_its_exception():
    codes = {m[0]: int(m[1]) for m in re.findall(r"^\s*(EGOSF_E[A-Z_]+) = (\d+)", HEADER.read_text(), re.M)}
    assert len(codes) == 11
    assert sorted(egosf.ERRORS) == sorted(codes.values())
    assert len(set(egosf.ERRORS.values())) == len(codes)
    for code, cls in egosf.ERRORS.items():
        assert issubclass(cls, egosf.EgosfError) and cls.code == code


def test_lifecycle(handle):
    t = handle.request(3, immediate=True, name="pytest", lease=60)
    assert t.granted == 3 and t.backend == "static" and t.id.startswith("static-")
    assert t.slots == [egosf.Slot("h1", "10.0.0.1", 2), egosf.Slot("h2", "10.0.0.2", 1)]
    assert t.expires is not None
    assert [x.id for x in handle.list()] == [t.id]
    assert handle.get(t.id).granted == 3
    r = t.renew(120)
    assert r.expires > t.expires
    with pytest.raises(egosf.InvalidArgument):
        t.release([("h1", 3)])  # more than held: nothing changes
    left = t.release([("h1", 1)])
    assert left is not None and left.granted == 2
    assert t.release() is None
    with pytest.raises(egosf.UnknownTicket) as e:
        handle.get(t.id)
    assert t.id in str(e.value) and e.value.code == 4
    assert handle.list() == []


def test_context_manager_releases(handle):
    with handle.request(4, min=1) as t:
        assert t.granted == 4
        with pytest.raises(egosf.NoneAvailable):
            handle.request(1, immediate=True)
    assert handle.list() == []
    with pytest.raises(RuntimeError):
        with handle.request(2) as t:
            raise RuntimeError("boom")
    assert handle.list() == []  # released on the way out of an exception too


def test_timeout(handle):
    with handle.request(4):
        with pytest.raises(egosf.Timeout):
            handle.request(1, timeout=0.2)


def test_bad_arguments(handle, pool):
    with pytest.raises(egosf.InvalidArgument, match="minimum 3 is larger than maximum 2"):
        handle.request(2, min=3)
    for args in [(0,), (-1, -1)]:
        with pytest.raises(egosf.InvalidArgument):
            handle.request(*args)
    with pytest.raises(egosf.NoneAvailable):
        handle.request(5, immediate=True)  # the pool never holds 5
    with pytest.raises(egosf.InvalidArgument):
        handle.request(1, lease=0.5)
    with pytest.raises(egosf.InvalidArgument):
        handle.request(1, timeout=-1)
    with pytest.raises(egosf.UnknownTicket):
        handle.release("static-nosuch")
    with pytest.raises(egosf.UnknownTicket):
        handle.renew("static-nosuch")
    with pytest.raises(egosf.InvalidArgument):
        handle.get("")
    with pytest.raises(egosf.InvalidArgument):
        egosf.Handle("/nonexistent/snowflock.yaml")
    h = egosf.Handle(pool)
    h.close()
    h.close()
    with pytest.raises(egosf.InvalidArgument):
        h.list()


def test_threads_share_a_handle(handle):
    errors = []

    def work(n):
        try:
            for _ in range(10):
                with handle.request(2, min=1, timeout=60) as t:
                    assert 1 <= t.granted <= 2
                    with pytest.raises(egosf.UnknownTicket, match=f"static-thread-{n}"):
                        handle.get(f"static-thread-{n}")  # its own message, not another thread's
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert handle.list() == []


def test_guest_api_outside_a_guest(no_agent):
    calls = [
        lambda: egosf.request_ticket(4),
        lambda: egosf.clone("t-1"),
        lambda: egosf.join("t-1"),
        lambda: egosf.kill("t-1"),
        lambda: egosf.exit(b"done"),
        lambda: egosf.checkpoint_parent(),
        lambda: egosf.create_clones("cp-1", "t-1"),
        lambda: egosf.release_ticket("t-1"),
    ]
    for call in calls:
        with pytest.raises(egosf.NotInGuest, match="not inside a SnowFlock guest"):
            call()
    with pytest.raises(egosf.InvalidArgument):
        egosf.request_ticket(0)
    with pytest.raises(egosf.InvalidArgument):
        egosf.exit(b"x" * (16 * 1024 + 1))
    with pytest.raises(egosf.InvalidArgument):
        egosf.clone("")


def test_library_not_found_says_what_it_tried(monkeypatch, tmp_path):
    from egosf import _lib

    missing = str(tmp_path / "nope" / "libegosf.so")
    monkeypatch.setenv("EGOSF_LIBRARY", missing)
    monkeypatch.setattr(_lib, "_lib", None)
    with pytest.raises(egosf.LibraryNotFound) as e:
        _lib.load()
    assert missing in str(e.value) and "EGOSF_LIBRARY" in str(e.value)
    monkeypatch.delenv("EGOSF_LIBRARY")
    monkeypatch.setattr(_lib.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(_lib.ctypes, "CDLL", lambda path: (_ for _ in ()).throw(OSError(f"{path}: cannot open")))
    with pytest.raises(egosf.LibraryNotFound) as e:
        _lib.load()
    here = os.path.join(os.path.dirname(egosf.__file__), "libegosf.so")
    assert here in str(e.value) and "libegosf.so: " in str(e.value)
