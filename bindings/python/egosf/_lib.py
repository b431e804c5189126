"""Finding and loading libegosf, and the C prototypes of its functions."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import POINTER, c_char_p, c_int, c_int64, c_size_t, c_void_p

#: Environment variable naming the library file to load.
LIBRARY_ENV = "EGOSF_LIBRARY"
_NAME = "libegosf.so"


class LibraryNotFound(OSError):
    """libegosf could not be loaded; the message lists every place tried."""


class _Slot(ctypes.Structure):
    """egosf_slot from egosf.h."""

    _fields_ = [("host", c_char_p), ("count", c_int)]


class _RequestOptions(ctypes.Structure):
    """egosf_request_options from egosf.h."""

    _fields_ = [
        ("name", c_char_p),
        ("consumer", c_char_p),
        ("resreq", c_char_p),
        ("exclusive", c_int),
        ("immediate", c_int),
        ("lease_ms", c_int64),
        ("timeout_ms", c_int64),
    ]


# (name, result type, argument types) of every function used.
_PROTOTYPES = [
    ("egosf_strerror", c_char_p, [c_int]),
    ("egosf_last_error", c_char_p, []),
    ("egosf_open", c_int, [c_char_p, POINTER(c_void_p)]),
    ("egosf_close", c_int, [c_void_p]),
    ("egosf_request", c_int, [c_void_p, c_int, c_int, POINTER(_RequestOptions), POINTER(c_void_p)]),
    ("egosf_release", c_int, [c_void_p, c_char_p, POINTER(_Slot), c_size_t, POINTER(c_void_p)]),
    ("egosf_renew", c_int, [c_void_p, c_char_p, c_int64, POINTER(c_void_p)]),
    ("egosf_get", c_int, [c_void_p, c_char_p, POINTER(c_void_p)]),
    ("egosf_list", c_int, [c_void_p, POINTER(c_void_p)]),
    ("egosf_ticket_id", c_char_p, [c_void_p]),
    ("egosf_ticket_backend", c_char_p, [c_void_p]),
    ("egosf_ticket_granted", c_int, [c_void_p]),
    ("egosf_ticket_expires", c_int64, [c_void_p]),
    ("egosf_ticket_nhosts", c_int, [c_void_p]),
    ("egosf_ticket_host_name", c_char_p, [c_void_p, c_int]),
    ("egosf_ticket_host_address", c_char_p, [c_void_p, c_int]),
    ("egosf_ticket_host_count", c_int, [c_void_p, c_int]),
    ("egosf_ticket_free", None, [c_void_p]),
    ("egosf_ticket_list_count", c_int, [c_void_p]),
    ("egosf_ticket_list_at", c_void_p, [c_void_p, c_int]),
    ("egosf_ticket_list_free", None, [c_void_p]),
    ("egosf_string_free", None, [c_void_p]),
    ("sf_request_ticket", c_int, [c_int, POINTER(c_void_p), POINTER(c_int)]),
    ("sf_clone", c_int, [c_char_p, POINTER(c_int)]),
    ("sf_join", c_int, [c_char_p, POINTER(c_void_p)]),
    ("sf_kill", c_int, [c_char_p]),
    ("sf_exit", c_int, [c_char_p, c_size_t]),
    ("sf_checkpoint_parent", c_int, [POINTER(c_void_p), POINTER(c_int)]),
    ("sf_create_clones", c_int, [c_char_p, c_char_p, POINTER(c_int)]),
    ("sf_release_ticket", c_int, [c_char_p]),
    ("egosf_exits_count", c_int, [c_void_p]),
    ("egosf_exit_clone_id", c_int, [c_void_p, c_int]),
    ("egosf_exit_result", c_void_p, [c_void_p, c_int, POINTER(c_size_t)]),
    ("egosf_exit_killed", c_int, [c_void_p, c_int]),
    ("egosf_exit_reason", c_char_p, [c_void_p, c_int]),
    ("egosf_exits_free", None, [c_void_p]),
]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def candidates() -> list[str]:
    """The places libegosf is looked for, in order.

    1. the file named by $EGOSF_LIBRARY (only it, when set);
    2. libegosf.so next to this package;
    3. the system library path (the dynamic linker's search, and
       ctypes.util.find_library("egosf")).
    """
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return [env]
    out = [os.path.join(os.path.dirname(os.path.abspath(__file__)), _NAME), _NAME]
    found = ctypes.util.find_library("egosf")
    if found and found not in out:
        out.append(found)
    return out


def load() -> ctypes.CDLL:
    """Loads libegosf once (thread-safe) and returns it."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for path in candidates():
            if os.sep in path and not os.path.exists(path):
                tried.append(f"{path}: no such file")
                continue
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                tried.append(f"{path}: {e}")
                continue
            for name, restype, argtypes in _PROTOTYPES:
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = restype, argtypes
            _lib = lib
            return lib
        raise LibraryNotFound(
            "cannot load libegosf; tried:\n  "
            + "\n  ".join(tried)
            + f"\nInstall it (make install PREFIX=/usr/local, then ldconfig) or set {LIBRARY_ENV} to its path."
        )
