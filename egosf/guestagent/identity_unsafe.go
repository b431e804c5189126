package guestagent

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlBytes is ioctl(fd, req, b) with a pointer to b's first byte.
//
// Preconditions: len(b) > 0.
func ioctlBytes(fd int, req uint, b []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&b[0])))
	if errno != 0 {
		return errno
	}
	return nil
}
