package plugin

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snowflock/snowflock/allocator"
)

// classes maps each allocator error class to its gRPC code, one to one.
var classes = []struct {
	err  error
	code codes.Code
}{
	{allocator.ErrInvalidArgument, codes.InvalidArgument},
	{allocator.ErrNoneAvailable, codes.ResourceExhausted},
	{allocator.ErrTimeout, codes.DeadlineExceeded},
	{allocator.ErrUnknownAllocation, codes.NotFound},
	{allocator.ErrBackendDown, codes.Unavailable},
	{context.Canceled, codes.Canceled},
}

// ToStatus turns an error of an allocator into a gRPC status error whose
// code names its class and whose message is the error's text. An error of
// no class becomes codes.Unknown.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		var re *remoteError
		if !errors.As(err, &re) {
			return err
		}
	}
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// remoteError is an error that crossed the plugin boundary: its text is the
// plugin's, and it wraps the class its status code names.
type remoteError struct {
	msg   string
	class error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.class }

// FromStatus turns a gRPC status error back into an error wrapping its
// allocator class, keeping the plugin's message. Codes of no class (and
// errors that are no status) become allocator.ErrBackendDown: the plugin
// failed in a way the interface does not describe.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%v: %w", err, allocator.ErrBackendDown)
	}
	for _, c := range classes {
		if st.Code() == c.code {
			return &remoteError{msg: st.Message(), class: c.err}
		}
	}
	return &remoteError{msg: fmt.Sprintf("%s (%s)", st.Message(), st.Code()), class: allocator.ErrBackendDown}
}
