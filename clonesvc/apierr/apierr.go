// Package apierr carries the clone service's error classes across the
// daemon API: each class becomes a gRPC status code on the server and the
// same class again on the client, so errors.Is works on both sides.
package apierr

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/clonesvc"
)

// classes pairs each error class with its code. Order matters for
// ToGRPC: the first class an error matches wins. Several classes may share
// a code; FromGRPC maps a code back to the first class listed with it.
var classes = []struct {
	err  error
	code codes.Code
}{
	{clonesvc.ErrInvalidArgument, codes.InvalidArgument},
	{allocator.ErrInvalidArgument, codes.InvalidArgument},
	{clonesvc.ErrNotFound, codes.NotFound},
	{allocator.ErrUnknownAllocation, codes.NotFound},
	{clonesvc.ErrPermissionDenied, codes.PermissionDenied},
	{allocator.ErrNoneAvailable, codes.ResourceExhausted},
	{allocator.ErrTimeout, codes.DeadlineExceeded},
	{clonesvc.ErrVMFailed, codes.Internal},
	{clonesvc.ErrUnavailable, codes.Unavailable},
	{allocator.ErrBackendDown, codes.Unavailable},
}

// ToGRPC turns err into a gRPC status error whose code names its class.
// nil stays nil; an error that is already a status passes unchanged.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// Error is an error that came back over the daemon API: the server's
// message, matching (errors.Is) the class its code stands for.
type Error struct {
	Code  codes.Code
	Msg   string
	class error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the class, so errors.Is(err, clonesvc.ErrNotFound) holds.
func (e *Error) Unwrap() error { return e.class }

// FromGRPC turns a gRPC status error back into an error of its class.
// Errors that are not statuses (a dial failure) pass unchanged.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Msg: st.Message()}
	for _, c := range classes {
		if c.code == st.Code() {
			e.class = c.err
			break
		}
	}
	switch st.Code() {
	case codes.Canceled:
		e.class = context.Canceled
	case codes.DeadlineExceeded:
		// A deadline passed on the server (allocator timeout) or on the
		// way: both are timeouts to the caller.
		e.class = allocator.ErrTimeout
	}
	return e
}
