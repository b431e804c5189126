package descriptor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// The envelope (after Firecracker's snapshot format):
//
//	8 bytes  Magic
//	u16      major format version (little-endian)
//	u16      minor format version
//	u32      payload length
//	payload  (payload.go)
//	u64      CRC-64 of everything before it: hash/crc64 with the ECMA-182
//	         polynomial (the CRC-64/XZ parameters), little-endian
//
// The format version is the descriptor's own, not sfld's release. A reader
// refuses another major version and a newer minor version, and accepts an
// older minor. Bump the major on any change an older reader would misread;
// a minor bump may only add what an older reader need not see, and the
// decoder then branches on the minor it read.
const (
	// Magic starts every descriptor. The high first byte catches text-mode
	// mangling, the final newline catches line-ending conversion.
	Magic        = "\x89SFDESC\n"
	FormatMajor  = 1
	FormatMinor  = 0
	headerSize   = len(Magic) + 2 + 2 + 4
	checksumSize = 8
)

// ErrUnsupportedVersion marks a descriptor whose format version this build
// cannot read (written by a newer or incompatible sfld). Unmarshal wraps it
// together with errdefs.ErrInvalidArgument.
var ErrUnsupportedVersion = errors.New("unsupported descriptor format version")

var crcTable = crc64.MakeTable(crc64.ECMA)

// MarshalBinary validates d and encodes it in the current format version.
func (d *Descriptor) MarshalBinary() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, headerSize, headerSize+len(d.Machine)+len(d.DeviceState)/2+64<<10)
	copy(b, Magic)
	binary.LittleEndian.PutUint16(b[8:], FormatMajor)
	binary.LittleEndian.PutUint16(b[10:], FormatMinor)
	b, err := encodePayload(b, d)
	if err != nil {
		return nil, fmt.Errorf("descriptor: %w", err)
	}
	if len(b)+checksumSize > MaxSize {
		return nil, fmt.Errorf("descriptor: %w: encodes to %d bytes, over the %d-byte limit",
			errdefs.ErrInvalidArgument, len(b)+checksumSize, MaxSize)
	}
	binary.LittleEndian.PutUint32(b[12:], uint32(len(b)-headerSize))
	return binary.LittleEndian.AppendUint64(b, crc64.Checksum(b, crcTable)), nil
}

// Unmarshal decodes and validates a descriptor. Every problem is an error
// wrapping errdefs.ErrInvalidArgument (and ErrUnsupportedVersion for a
// version it cannot read) that names the cause.
func Unmarshal(b []byte) (*Descriptor, error) {
	d, err := unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("descriptor: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	return d, nil
}

func unmarshal(b []byte) (*Descriptor, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%d bytes, over the %d-byte limit", len(b), MaxSize)
	}
	if len(b) < headerSize {
		return nil, fmt.Errorf("truncated: %d bytes, shorter than the %d-byte header", len(b), headerSize)
	}
	if string(b[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("bad magic %q: not a SnowFlock VM descriptor", b[:len(Magic)])
	}
	major, minor := binary.LittleEndian.Uint16(b[8:]), binary.LittleEndian.Uint16(b[10:])
	if major != FormatMajor || minor > FormatMinor {
		return nil, fmt.Errorf("%w %d.%d: this build reads %d.0 to %d.%d",
			ErrUnsupportedVersion, major, minor, FormatMajor, FormatMajor, FormatMinor)
	}
	n := uint64(binary.LittleEndian.Uint32(b[12:]))
	if want := uint64(headerSize) + n + checksumSize; uint64(len(b)) != want {
		return nil, fmt.Errorf("length mismatch: header says %d bytes in all, got %d (truncated or trailing data)", want, len(b))
	}
	end := headerSize + int(n)
	if sum, want := crc64.Checksum(b[:end], crcTable), binary.LittleEndian.Uint64(b[end:]); sum != want {
		return nil, fmt.Errorf("checksum mismatch (computed %016x, stored %016x): the descriptor is corrupt", sum, want)
	}
	d, err := decodePayload(b[headerSize:end])
	if err != nil {
		return nil, err
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	return d, nil
}

// Write stores d at path atomically: a temporary file in the same
// directory, written, synced, renamed over path, then the directory synced.
// The file is mode 0600: it holds the family key.
func Write(path string, d *Descriptor) error {
	b, err := d.MarshalBinary()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("writing descriptor %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing descriptor %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("writing descriptor %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Read loads and validates the descriptor at path, reading at most MaxSize
// bytes. A missing file wraps errdefs.ErrNotFound and fs.ErrNotExist; a
// bad one wraps errdefs.ErrInvalidArgument.
func Read(path string) (*Descriptor, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading descriptor: %w: %w", errdefs.ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading descriptor: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(f, MaxSize+1)); err != nil {
		return nil, fmt.Errorf("reading descriptor %s: %w", path, err)
	}
	d, err := Unmarshal(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return d, nil
}
