package guestproto

import (
	"errors"
	"fmt"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// Error is a failed request's reply: a class code and a message for
// people. On the guest side it matches (errors.Is) the sentinel of its code.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Error codes and the errors they stand for: the clone service's own
// classes, so that one sentinel serves on both sides of the channel.
var (
	ErrInvalidArgument  = errdefs.ErrInvalidArgument
	ErrNotFound         = errdefs.ErrNotFound
	ErrPermissionDenied = errdefs.ErrPermissionDenied
	ErrVMFailed         = errdefs.ErrVMFailed
	ErrUnavailable      = errdefs.ErrUnavailable
	// ErrNotInGuest: the program does not run inside a SnowFlock guest (no
	// agent to talk to).
	ErrNotInGuest = errors.New("not inside a SnowFlock guest")
)

// codes maps each wire code to its sentinel. Allocator classes keep the
// allocator's own sentinels so that callers test one error for both paths.
var codes = map[string]error{
	"invalid_argument":  ErrInvalidArgument,
	"not_found":         ErrNotFound,
	"permission_denied": ErrPermissionDenied,
	"vm_failed":         ErrVMFailed,
	"unavailable":       ErrUnavailable,
	"none_available":    allocator.ErrNoneAvailable,
	"timeout":           allocator.ErrTimeout,
}

// Is reports whether e's code stands for target.
func (e *Error) Is(target error) bool { return codes[e.Code] == target }

// NewError builds a reply error of class code (one of the codes above;
// anything else is "unavailable").
func NewError(code string, err error) *Error {
	if _, ok := codes[code]; !ok {
		code = "unavailable"
	}
	return &Error{Code: code, Message: err.Error()}
}

// CodeOf returns the code whose sentinel err matches (via errors.Is), the
// first of the table's order, or "unavailable".
func CodeOf(err error, extra map[error]string) string {
	for sentinel, code := range extra {
		if errors.Is(err, sentinel) {
			return code
		}
	}
	for code, sentinel := range codes {
		if errors.Is(err, sentinel) {
			return code
		}
	}
	return "unavailable"
}

// Codes lists the wire codes (for tests and documentation).
func Codes() []string {
	out := make([]string, 0, len(codes))
	for c := range codes {
		out = append(out, c)
	}
	return out
}

func (e *Error) String() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }
