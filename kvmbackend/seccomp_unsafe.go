package kvmbackend

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setSeccompFilter installs prog on the calling thread:
// prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sock_fprog).
func setSeccompFilter(prog []unix.SockFilter) error {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_PRCTL, unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return errno
	}
	return nil
}
