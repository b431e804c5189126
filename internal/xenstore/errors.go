package xenstore

import (
	"errors"
	"io/fs"
	"syscall"
)

// Error classes. An *Error from xenstored matches (errors.Is) the class of
// its errno; see Error.Is.
var (
	// ErrClosed: the connection is closed (by Close, or because the peer
	// went away or broke the protocol). Every call on it fails with an
	// error that wraps ErrClosed and the cause.
	ErrClosed = errors.New("xenstore: connection closed")
	// ErrProtocol: the peer sent a malformed message.
	ErrProtocol = errors.New("xenstore: protocol error")
	// ErrRetry: EAGAIN (a transaction conflicted with another change and
	// must be redone from its start) or EBUSY.
	ErrRetry = errors.New("xenstore: try again")
	// ErrQuota: ENOSPC, a quota of xenstored (nodes, node size, watches,
	// transactions) refused the request.
	ErrQuota = errors.New("xenstore: quota exceeded")
	// ErrTooLarge: E2BIG from xenstored, or a request refused before
	// sending because its payload exceeds XENSTORE_PAYLOAD_MAX.
	ErrTooLarge = errors.New("xenstore: message too large")
)

// Error is a request's error reply (type XS_ERROR, payload "ENOENT\0").
type Error struct {
	Op    string // the request's type, e.g. "READ"
	Path  string // the path it named, if any
	Errno string // the errno name xenstored sent, e.g. "ENOENT"
}

func (e *Error) Error() string {
	if e.Path == "" {
		return "xenstore " + e.Op + ": " + e.Errno
	}
	return "xenstore " + e.Op + " " + e.Path + ": " + e.Errno
}

// Is matches the class of e's errno: ENOENT is fs.ErrNotExist, EACCES and
// EPERM fs.ErrPermission, EEXIST fs.ErrExist, EINVAL fs.ErrInvalid,
// EAGAIN and EBUSY ErrRetry, ENOSPC ErrQuota, E2BIG ErrTooLarge, ENOSYS
// errors.ErrUnsupported.
func (e *Error) Is(target error) bool {
	switch target {
	case fs.ErrNotExist:
		return e.Errno == "ENOENT"
	case fs.ErrPermission:
		return e.Errno == "EACCES" || e.Errno == "EPERM"
	case fs.ErrExist:
		return e.Errno == "EEXIST"
	case fs.ErrInvalid:
		return e.Errno == "EINVAL"
	case ErrRetry:
		return e.Errno == "EAGAIN" || e.Errno == "EBUSY"
	case ErrQuota:
		return e.Errno == "ENOSPC"
	case ErrTooLarge:
		return e.Errno == "E2BIG"
	case errors.ErrUnsupported:
		return e.Errno == "ENOSYS"
	}
	return false
}

// errnoNames names the errnos of xsd_errors in xs_wire.h, for requests
// the Linux xenbus device refuses in write(2) instead of replying.
var errnoNames = map[syscall.Errno]string{
	syscall.EINVAL:    "EINVAL",
	syscall.EACCES:    "EACCES",
	syscall.EEXIST:    "EEXIST",
	syscall.EISDIR:    "EISDIR",
	syscall.ENOENT:    "ENOENT",
	syscall.ENOMEM:    "ENOMEM",
	syscall.ENOSPC:    "ENOSPC",
	syscall.EIO:       "EIO",
	syscall.ENOTEMPTY: "ENOTEMPTY",
	syscall.ENOSYS:    "ENOSYS",
	syscall.EROFS:     "EROFS",
	syscall.EBUSY:     "EBUSY",
	syscall.EAGAIN:    "EAGAIN",
	syscall.EISCONN:   "EISCONN",
	syscall.E2BIG:     "E2BIG",
	syscall.EPERM:     "EPERM",
	syscall.EILSEQ:    "EILSEQ",
}
