package clonesvc

import "github.com/snowflock/snowflock/clonesvc/errdefs"

// Error classes of the clone service. Wrap them with %w and test them with
// errors.Is; the daemon API maps each to a gRPC status code and back. They
// are defined in errdefs (a leaf package) so that sub-packages clonesvc
// imports, such as descriptor and pki, can wrap the same values.
var (
	// ErrInvalidArgument: the request is malformed (n ≤ 0, unknown option).
	ErrInvalidArgument = errdefs.ErrInvalidArgument
	// ErrNotFound: no such VM, ticket, checkpoint or family.
	ErrNotFound = errdefs.ErrNotFound
	// ErrPermissionDenied: a guest asked to act on something not its own.
	ErrPermissionDenied = errdefs.ErrPermissionDenied
	// ErrVMFailed: the hypervisor failed (QEMU died, a QMP command failed).
	ErrVMFailed = errdefs.ErrVMFailed
	// ErrUnavailable: the service cannot serve now (shutting down, the
	// allocator is down).
	ErrUnavailable = errdefs.ErrUnavailable
)
