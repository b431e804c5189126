package guestagent

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSizes checks the ABI against the kernel's: RNDADDENTROPY is
// _IOW('R', 0x03, int[2]), so its size field is sizeof(struct
// rand_pool_info) without the flexible array.
func TestSizes(t *testing.T) {
	if got := (unix.RNDADDENTROPY >> 16) & 0x3fff; got != SizeofRandPoolInfo {
		t.Errorf("RNDADDENTROPY encodes an argument of %d bytes, SizeofRandPoolInfo is %d", got, SizeofRandPoolInfo)
	}
}

func TestRandPoolInfoLayout(t *testing.T) {
	seed := []byte{0xde, 0xad, 0xbe, 0xef, 0x01}
	b := randPoolInfo(seed)
	if len(b) != SizeofRandPoolInfo+len(seed) {
		t.Fatalf("buffer of %d bytes, want %d", len(b), SizeofRandPoolInfo+len(seed))
	}
	if got := int32(binary.NativeEndian.Uint32(b[0:])); got != 8*int32(len(seed)) {
		t.Errorf("entropy_count %d, want %d bits", got, 8*len(seed))
	}
	if got := int32(binary.NativeEndian.Uint32(b[4:])); got != int32(len(seed)) {
		t.Errorf("buf_size %d, want %d", got, len(seed))
	}
	if string(b[SizeofRandPoolInfo:]) != string(seed) {
		t.Errorf("buf %x, want %x", b[SizeofRandPoolInfo:], seed)
	}
}

// TestReseedOnKernel hands the buffer to the running kernel: it accepts it
// (a misplaced field would read as a negative count: EINVAL), and refuses
// one whose entropy_count is negative, which shows it reads the fields
// where randPoolInfo puts them. Needs root (CAP_SYS_ADMIN); the seed is
// fresh randomness, harmless to the host's pool.
func TestReseedOnKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestReseedOnKernel needs root (RNDADDENTROPY needs CAP_SYS_ADMIN); run the tests as root")
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	if err := reseed("/dev/urandom", seed); err != nil {
		t.Fatalf("reseed: %v", err)
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bad := randPoolInfo(seed)
	binary.NativeEndian.PutUint32(bad[0:], uint32(0xffffffff)) // entropy_count -1
	if err := ioctlBytes(int(f.Fd()), unix.RNDADDENTROPY, bad); !errors.Is(err, unix.EINVAL) {
		t.Errorf("negative entropy_count: %v, want EINVAL", err)
	}
	if err := reseed("/dev/urandom", nil); err == nil {
		t.Error("an empty seed is reported")
	}
	if err := reseed("/nonexistent/urandom", seed); err == nil {
		t.Error("a missing device is reported")
	}
}
