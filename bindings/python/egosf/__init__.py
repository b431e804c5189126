"""egosf — SnowFlock from Python: clone slots (tickets) and the guest API.

A ctypes binding of libegosf (the C library of SnowFlock's egosf Go
package). Slots::

    import egosf
    with egosf.Handle("pool.yaml") as h:          # None: the default configuration
        with h.request(4, min=2, timeout=30) as t:  # released when the block ends
            for s in t.slots:
                print(s.host, s.address, s.count)

Inside a SnowFlock VM, the guest API::

    ticket, granted = egosf.request_ticket(4)
    cid = egosf.clone(ticket)              # 0 in the parent, 1..granted-1 in clones
    if cid > 0:
        egosf.exit(b"result")              # a clone ends here
    exits = egosf.join(ticket)             # the parent collects the clones' results

Outside a guest these raise :class:`NotInGuest`. Every failure raises a
subclass of :class:`EgosfError`, one per libegosf error code.

libegosf is found through $EGOSF_LIBRARY, next to this package, or the
system library path (see :func:`egosf._lib.candidates`); it is loaded on
first use, so ``import egosf`` works without it.

Thread safety: a :class:`Handle` may be used from many threads at once
(libegosf keeps each thread's error message apart); :class:`Ticket` objects
are plain immutable snapshots.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
from ctypes import byref, c_int, c_size_t, c_void_p
from typing import Iterable, NamedTuple, Optional, Sequence

from ._lib import LIBRARY_ENV, LibraryNotFound, _RequestOptions, _Slot, candidates, load

__all__ = [
    "EgosfError", "InvalidArgument", "NoneAvailable", "Timeout", "UnknownTicket",
    "BackendDown", "NotFound", "PermissionDenied", "VMFailed", "Unavailable",
    "NotInGuest", "InternalError", "LibraryNotFound", "LIBRARY_ENV", "Slot", "Ticket",
    "Handle", "Exit", "request_ticket", "clone", "join", "kill", "exit",
    "checkpoint_parent", "create_clones", "release_ticket", "candidates",
]

__version__ = "0.1.0"


# ---- errors ----


class EgosfError(Exception):
    """A libegosf call failed. ``code`` is its EGOSF_E* code, ``message``
    libegosf's message, ``name`` egosf_strerror(code)."""

    code: int = -1

    def __init__(self, code: int, message: str, name: str = "") -> None:
        super().__init__(message or name)
        self.code = code
        self.message = message
        self.name = name


class InvalidArgument(EgosfError, ValueError):
    """EGOSF_EINVAL: the arguments are wrong; retrying cannot help."""

    code = 1


class NoneAvailable(EgosfError):
    """EGOSF_ENONE_AVAILABLE: not enough slots free now, or ever."""

    code = 2


class Timeout(EgosfError, TimeoutError):
    """EGOSF_ETIMEOUT: the timeout passed first."""

    code = 3


class UnknownTicket(EgosfError, KeyError):
    """EGOSF_EUNKNOWN_TICKET: no ticket has that ID."""

    code = 4

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class BackendDown(EgosfError):
    """EGOSF_EBACKEND_DOWN: the allocator backend cannot be reached."""

    code = 5


class NotFound(EgosfError):
    """EGOSF_ENOT_FOUND: guest API: no such ticket, checkpoint or VM."""

    code = 6


class PermissionDenied(EgosfError, PermissionError):
    """EGOSF_EPERMISSION: guest API: this VM may not do that."""

    code = 7


class VMFailed(EgosfError):
    """EGOSF_EVM_FAILED: guest API: the hypervisor failed."""

    code = 8


class Unavailable(EgosfError):
    """EGOSF_EUNAVAILABLE: guest API: the SnowFlock host cannot serve now."""

    code = 9


class NotInGuest(EgosfError):
    """EGOSF_ENOT_IN_GUEST: not inside a SnowFlock guest (no agent)."""

    code = 10


class InternalError(EgosfError):
    """EGOSF_EINTERNAL: a failure of no other class (a bug in libegosf)."""

    code = 11


#: The exception class of each libegosf error code.
ERRORS: dict[int, type[EgosfError]] = {
    c.code: c
    for c in (InvalidArgument, NoneAvailable, Timeout, UnknownTicket, BackendDown, NotFound,
              PermissionDenied, VMFailed, Unavailable, NotInGuest, InternalError)
}


def _error(lib: ctypes.CDLL, rc: int) -> EgosfError:
    # Same thread as the failed call: libegosf's last error is per thread.
    message = (lib.egosf_last_error() or b"").decode(errors="replace")
    name = (lib.egosf_strerror(rc) or b"").decode(errors="replace")
    return ERRORS.get(rc, EgosfError)(rc, message, name)


def _check(lib: ctypes.CDLL, rc: int) -> None:
    if rc != 0:
        raise _error(lib, rc)


def _enc(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else s.encode()


def _ms(seconds: Optional[float], what: str) -> int:
    if seconds is None:
        return 0
    if seconds < 0:
        raise InvalidArgument(1, f"{what} {seconds} s is negative", "invalid argument")
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def _take_string(lib: ctypes.CDLL, p: c_void_p) -> str:
    """Copies a string libegosf returned, then frees it."""
    try:
        return ctypes.string_at(p.value).decode() if p.value else ""
    finally:
        lib.egosf_string_free(p)


# ---- slots ----


class Slot(NamedTuple):
    """Slots of a ticket on one host."""

    host: str
    address: str
    count: int


class Ticket:
    """A grant of clone slots: a snapshot of the ticket when it was returned.

    Used as a context manager (``with handle.request(...) as t:``), it
    releases every slot it still holds when the block ends.
    """

    id: str
    backend: str
    granted: int
    expires: Optional[_dt.datetime]
    slots: list[Slot]

    def __init__(self, handle: "Handle", lib: ctypes.CDLL, p: int) -> None:
        self._handle = handle
        self.id = lib.egosf_ticket_id(p).decode()
        self.backend = lib.egosf_ticket_backend(p).decode()
        self.granted = lib.egosf_ticket_granted(p)
        ms = lib.egosf_ticket_expires(p)
        self.expires = _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc) if ms > 0 else None
        self.slots = [
            Slot(lib.egosf_ticket_host_name(p, i).decode(), lib.egosf_ticket_host_address(p, i).decode(),
                 lib.egosf_ticket_host_count(p, i))
            for i in range(lib.egosf_ticket_nhosts(p))
        ]

    def __repr__(self) -> str:
        hosts = ",".join(f"{s.host}:{s.count}" for s in self.slots)
        return f"Ticket(id={self.id!r}, granted={self.granted}, slots={hosts!r})"

    def release(self, slots: Optional[Iterable[tuple[str, int]]] = None) -> Optional["Ticket"]:
        """Gives back all slots, or ``(host, count)`` pairs; see Handle.release."""
        return self._handle.release(self.id, slots)

    def renew(self, lease: Optional[float] = None) -> "Ticket":
        """Extends the lease to ``lease`` seconds from now (None: default)."""
        return self._handle.renew(self.id, lease)

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._handle.release(self.id)
        except UnknownTicket:
            pass  # already given back (or expired): nothing left to release


class Handle:
    """An open allocator backend (egosf_open).

    ``config`` names a snowflock.yaml; None uses the default search
    ($SNOWFLOCK_CONFIG, /etc/snowflock/snowflock.yaml, the built-in default).
    Close it with :meth:`close` or use it as a context manager; tickets
    outlive it until released or their lease ends.
    """

    def __init__(self, config: Optional[str] = None) -> None:
        self._lib = load()
        h = c_void_p()
        _check(self._lib, self._lib.egosf_open(_enc(config), byref(h)))
        self._h: Optional[c_void_p] = h

    def _handle(self) -> c_void_p:
        if self._h is None:
            raise InvalidArgument(1, "the handle is closed", "invalid argument")
        return self._h

    def close(self) -> None:
        """Closes the handle (once; later calls do nothing)."""
        if self._h is not None:
            h, self._h = self._h, None
            _check(self._lib, self._lib.egosf_close(h))

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _ticket(self, p: c_void_p) -> Ticket:
        try:
            return Ticket(self, self._lib, p.value)
        finally:
            self._lib.egosf_ticket_free(p)

    def request(self, max: int, min: Optional[int] = None, *, name: Optional[str] = None,
                consumer: Optional[str] = None, resreq: Optional[str] = None,
                exclusive: bool = False, immediate: bool = False,
                lease: Optional[float] = None, timeout: Optional[float] = None) -> Ticket:
        """Requests between ``min`` (default: ``max``) and ``max`` slots.

        Waits until granted, ``timeout`` seconds (raises Timeout), or — with
        ``immediate`` — not at all (raises NoneAvailable). ``lease`` is in
        seconds (None: the backend's default, else at least 1).
        """
        if min is None:
            min = max
        o = _RequestOptions(_enc(name), _enc(consumer), _enc(resreq), int(exclusive), int(immediate),
                            _ms(lease, "lease"), _ms(timeout, "timeout"))
        out = c_void_p()
        _check(self._lib, self._lib.egosf_request(self._handle(), min, max, byref(o), byref(out)))
        return self._ticket(out)

    def release(self, id: str, slots: Optional[Iterable[tuple[str, int]]] = None) -> Optional[Ticket]:
        """Gives back ticket ``id``'s slots: all, or the ``(host, count)``
        pairs listed (count 0: all on that host). Returns what remains, or
        None when nothing does."""
        pairs: Sequence[tuple[str, int]] = list(slots or [])
        arr = (_Slot * len(pairs))(*[_Slot(_enc(h), c) for h, c in pairs]) if pairs else None
        out = c_void_p()
        _check(self._lib, self._lib.egosf_release(self._handle(), _enc(id), arr, len(pairs), byref(out)))
        return self._ticket(out) if out.value else None

    def renew(self, id: str, lease: Optional[float] = None) -> Ticket:
        """Extends ticket ``id``'s lease to ``lease`` seconds from now."""
        out = c_void_p()
        _check(self._lib, self._lib.egosf_renew(self._handle(), _enc(id), _ms(lease, "lease"), byref(out)))
        return self._ticket(out)

    def get(self, id: str) -> Ticket:
        """Looks up ticket ``id`` (raises UnknownTicket if gone)."""
        out = c_void_p()
        _check(self._lib, self._lib.egosf_get(self._handle(), _enc(id), byref(out)))
        return self._ticket(out)

    def list(self) -> list[Ticket]:
        """The tickets held through the backend, oldest first."""
        out = c_void_p()
        _check(self._lib, self._lib.egosf_list(self._handle(), byref(out)))
        try:
            return [Ticket(self, self._lib, self._lib.egosf_ticket_list_at(out, i))
                    for i in range(self._lib.egosf_ticket_list_count(out))]
        finally:
            self._lib.egosf_ticket_list_free(out)


# ---- the guest API ----


class Exit(NamedTuple):
    """How one clone ended, from :func:`join`."""

    clone_id: int
    result: bytes
    killed: bool  # it did not call exit (it died, or its VM failed)
    reason: str


def request_ticket(n: int) -> tuple[str, int]:
    """sf_request_ticket: asks for ``n`` VMs (the parent counting as clone
    0); returns the ticket and how many were granted."""
    lib = load()
    t, granted = c_void_p(), c_int()
    _check(lib, lib.sf_request_ticket(n, byref(t), byref(granted)))
    return _take_string(lib, t), granted.value


def clone(ticket: str) -> int:
    """sf_clone: 0 in the parent, 1..m-1 in each clone, which resumes here."""
    lib = load()
    cid = c_int()
    _check(lib, lib.sf_clone(_enc(ticket), byref(cid)))
    return cid.value


def join(ticket: str) -> list[Exit]:
    """sf_join: waits for every clone of ``ticket`` to end; their exits."""
    lib = load()
    e = c_void_p()
    _check(lib, lib.sf_join(_enc(ticket), byref(e)))
    try:
        out = []
        for i in range(lib.egosf_exits_count(e)):
            n = c_size_t()
            p = lib.egosf_exit_result(e, i, byref(n))
            out.append(Exit(lib.egosf_exit_clone_id(e, i), ctypes.string_at(p, n.value) if p else b"",
                            lib.egosf_exit_killed(e, i) == 1, (lib.egosf_exit_reason(e, i) or b"").decode()))
        return out
    finally:
        lib.egosf_exits_free(e)


def kill(ticket: str) -> None:
    """sf_kill: destroys every clone of ``ticket`` at once."""
    lib = load()
    _check(lib, lib.sf_kill(_enc(ticket)))


def exit(result: bytes = b"") -> None:
    """sf_exit: ends this clone, handing ``result`` (≤ 16 KiB) to join."""
    lib = load()
    _check(lib, lib.sf_exit(bytes(result), len(result)))


def checkpoint_parent() -> tuple[str, int]:
    """sf_checkpoint_parent: returns the checkpoint and 0 here; clones made
    later by create_clones resume here with their own ID."""
    lib = load()
    cp, cid = c_void_p(), c_int()
    _check(lib, lib.sf_checkpoint_parent(byref(cp), byref(cid)))
    return _take_string(lib, cp), cid.value


def create_clones(checkpoint: str, ticket: str) -> int:
    """sf_create_clones: starts clones of ``checkpoint``; how many."""
    lib = load()
    n = c_int()
    _check(lib, lib.sf_create_clones(_enc(checkpoint), _enc(ticket), byref(n)))
    return n.value


def release_ticket(ticket: str) -> None:
    """Gives back a guest ticket that was not used to clone."""
    lib = load()
    _check(lib, lib.sf_release_ticket(_enc(ticket)))
