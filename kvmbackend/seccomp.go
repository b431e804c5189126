package kvmbackend

import (
	"golang.org/x/sys/unix"
)

// seccompData is analogous to struct seccomp_data from
// include/uapi/linux/seccomp.h: what a seccomp BPF program reads.
type seccompData struct {
	Nr                 int32
	Arch               uint32
	InstructionPointer uint64
	Args               [6]uint64
}

// Offsets into seccompData (TestSeccompABI checks them).
const (
	sizeofSeccompData  = 64
	offsetofSeccompNr  = 0
	offsetofSeccompArc = 4
	offsetofSeccompArg = 16 // Args[0]; each argument is 8 bytes
)

// madviseHugepageFilter is a seccomp program that makes
// madvise(…, MADV_HUGEPAGE) return without doing anything, with the
// result ret (SECCOMP_RET_ERRNO | errno), and allows every other system
// call. Only x86-64 system calls are matched; others are allowed.
//
// QEMU asks for transparent huge pages on all guest RAM; on a mapping of
// a FUSE file that makes each fault read 2–4 MiB around it (FACTS.md,
// "Lazy memory"). Without the madvise, a fault reads the one page it
// touches.
func madviseHugepageFilter(ret uint32) []unix.SockFilter {
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK  = unix.BPF_RET | unix.BPF_K
	)
	// The advice is an int: the kernel reads the low 32 bits of the
	// argument, which come first on little-endian x86-64.
	adviceOff := uint32(offsetofSeccompArg + 2*8)
	return []unix.SockFilter{
		/* 0 */ {Code: ldAbs, K: offsetofSeccompArc},
		/* 1 */ {Code: jeqK, K: unix.AUDIT_ARCH_X86_64, Jt: 0, Jf: 5}, // → 7 allow
		/* 2 */ {Code: ldAbs, K: offsetofSeccompNr},
		/* 3 */ {Code: jeqK, K: unix.SYS_MADVISE, Jt: 0, Jf: 3}, // → 7 allow
		/* 4 */ {Code: ldAbs, K: adviceOff},
		/* 5 */ {Code: jeqK, K: unix.MADV_HUGEPAGE, Jt: 0, Jf: 1}, // → 7 allow
		/* 6 */ {Code: retK, K: ret},
		/* 7 */ {Code: retK, K: unix.SECCOMP_RET_ALLOW},
	}
}
