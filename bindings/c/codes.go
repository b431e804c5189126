package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// Result codes of the C API; the same values as the EGOSF_* enum in
// egosf.h (TestCodesMatchHeader checks them).
const (
	codeOK            = 0
	codeInvalid       = 1
	codeNoneAvailable = 2
	codeTimeout       = 3
	codeUnknownTicket = 4
	codeBackendDown   = 5
	codeNotFound      = 6
	codePermission    = 7
	codeVMFailed      = 8
	codeUnavailable   = 9
	codeNotInGuest    = 10
	codeInternal      = 11
	codeCount         = 12 // one past the last code
)

// classes maps each Go error class to its code, tested in order (the first
// class err matches wins). The allocator's and the clone service's
// "invalid argument" classes are one class for a C caller: both mean the
// call itself was wrong. A deadline that passed on the library's own
// timeout (context.DeadlineExceeded) is EGOSF_ETIMEOUT like the
// allocator's.
var classes = []struct {
	class error
	code  int
}{
	{egosf.ErrNotInGuest, codeNotInGuest},
	{allocator.ErrInvalidArgument, codeInvalid},
	{guestproto.ErrInvalidArgument, codeInvalid},
	{allocator.ErrNoneAvailable, codeNoneAvailable},
	{allocator.ErrTimeout, codeTimeout},
	{context.DeadlineExceeded, codeTimeout},
	{allocator.ErrUnknownAllocation, codeUnknownTicket},
	{allocator.ErrBackendDown, codeBackendDown},
	{guestproto.ErrNotFound, codeNotFound},
	{guestproto.ErrPermissionDenied, codePermission},
	{guestproto.ErrVMFailed, codeVMFailed},
	{guestproto.ErrUnavailable, codeUnavailable},
}

// codeOf returns the C code of err's class; codeInternal for an error of
// no known class.
func codeOf(err error) int {
	if err == nil {
		return codeOK
	}
	for _, c := range classes {
		if errors.Is(err, c.class) {
			return c.code
		}
	}
	return codeInternal
}

// errInvalid is a bad argument from C: a NULL pointer, a negative count.
func errInvalid(what string) error {
	return fmt.Errorf("%s: %w", what, allocator.ErrInvalidArgument)
}
