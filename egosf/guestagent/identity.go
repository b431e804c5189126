package guestagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// SizeofRandPoolInfo is the size of struct rand_pool_info without its
// flexible buf array.
const SizeofRandPoolInfo = 8

// MaxSeed caps the seed mixed into the RNG (the kernel takes any length;
// a few hundred bytes are plenty).
const MaxSeed = 4096

// randPoolInfo builds the argument of RNDADDENTROPY: struct rand_pool_info
// from include/uapi/linux/random.h,
//
//	struct rand_pool_info {
//		int entropy_count; /* bits */
//		int buf_size;      /* bytes */
//		__u32 buf[0];
//	};
//
// followed by the seed bytes, in the machine's byte order. The seed is
// credited with 8 bits of entropy per byte: it comes from the host's
// CSPRNG.
func randPoolInfo(seed []byte) []byte {
	b := make([]byte, SizeofRandPoolInfo+len(seed))
	binary.NativeEndian.PutUint32(b[0:], uint32(int32(8*len(seed))))
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(len(seed))))
	copy(b[SizeofRandPoolInfo:], seed)
	return b
}

// SetIdentity makes this VM a distinct clone: it sets the hostname (and
// /etc/hostname where writable), mixes id.Seed into the kernel's entropy
// pool and reseeds the kernel's CRNG so that the very next random number
// differs from every other clone's. It needs CAP_SYS_ADMIN.
func SetIdentity(id *guestproto.Identity) error {
	var errs []error
	if id.Hostname != "" {
		if err := unix.Sethostname([]byte(id.Hostname)); err != nil {
			errs = append(errs, fmt.Errorf("set hostname %q: %w", id.Hostname, err))
		}
		// /etc/hostname is best effort: often read-only or absent.
		os.WriteFile("/etc/hostname", []byte(id.Hostname+"\n"), 0o644)
	}
	if err := reseed("/dev/urandom", id.Seed); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// reseed adds seed to the entropy pool of the random device at path and
// forces a CRNG reseed (RNDRESEEDCRNG) even when seed is empty.
func reseed(path string, seed []byte) error {
	if len(seed) > MaxSeed {
		seed = seed[:MaxSeed]
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseed RNG: %w", err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("reseed RNG: %w", err)
	}
	var errs []error
	if len(seed) == 0 {
		errs = append(errs, errors.New("reseed RNG: empty seed (reseeding from the pool alone)"))
	}
	rc.Control(func(fd uintptr) {
		if len(seed) > 0 {
			if err := ioctlBytes(int(fd), unix.RNDADDENTROPY, randPoolInfo(seed)); err != nil {
				errs = append(errs, fmt.Errorf("reseed RNG: RNDADDENTROPY: %w", err))
			}
		}
		if err := unix.IoctlSetInt(int(fd), unix.RNDRESEEDCRNG, 0); err != nil {
			errs = append(errs, fmt.Errorf("reseed RNG: RNDRESEEDCRNG: %w", err))
		}
	})
	return errors.Join(errs...)
}
