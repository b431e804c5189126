// Package errdefs holds the clone service's error classes in a leaf
// package, so that clonesvc's sub-packages (descriptor, pki), which
// clonesvc itself imports, can wrap them; clonesvc re-exports each one
// under the same name.
package errdefs

import "errors"

// Error classes. Wrap them with %w and test them with errors.Is.
var (
	// ErrInvalidArgument: the request or input is malformed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: no such VM, ticket, checkpoint, family or file.
	ErrNotFound = errors.New("not found")
	// ErrPermissionDenied: the caller may not do this.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrVMFailed: the hypervisor failed.
	ErrVMFailed = errors.New("vm failed")
	// ErrUnavailable: the service cannot serve now.
	ErrUnavailable = errors.New("unavailable")
)
