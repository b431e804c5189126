package descriptor

import (
	"encoding/binary"
	"fmt"
	"time"
)

// The payload of format 1.0, all integers little-endian, every variable
// field length-prefixed and capped:
//
//	u16 n, n bytes   family ID
//	32 bytes         family key
//	u16 n, n bytes   parent VM ID
//	u16 n, n bytes   checkpoint ID
//	i64, u32         creation time: Unix seconds, nanoseconds (< 1e9)
//	u16 n, n bytes   backend name
//	u32 n, n bytes   machine configuration
//	u32 raw, u32 n, n bytes   device state: its length, then DEFLATE
//	u16 count        memory regions, then per region:
//	  u16 n, n bytes   name
//	  u64              size in bytes
//	  u32              page size
//	  u32 n, n bytes   zero-page bitmap, DEFLATE (its length follows from
//	                   size and page size)
//
// Nothing may follow the last region.

// encodePayload appends d's payload to b. d must be valid.
func encodePayload(b []byte, d *Descriptor) ([]byte, error) {
	b = appendString16(b, d.FamilyID)
	b = append(b, d.FamilyKey[:]...)
	b = appendString16(b, d.ParentVM)
	b = appendString16(b, d.CheckpointID)
	b = binary.LittleEndian.AppendUint64(b, uint64(d.Created.Unix()))
	b = binary.LittleEndian.AppendUint32(b, uint32(d.Created.Nanosecond()))
	b = appendString16(b, d.Backend)
	b = appendBytes32(b, d.Machine)
	state, err := deflate(d.DeviceState)
	if err != nil {
		return nil, fmt.Errorf("device state: %w", err)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(d.DeviceState)))
	b = appendBytes32(b, state)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(d.Regions)))
	for i := range d.Regions {
		r := &d.Regions[i]
		zero, err := deflate(r.Zero)
		if err != nil {
			return nil, fmt.Errorf("region %q: %w", r.Name, err)
		}
		b = appendString16(b, r.Name)
		b = binary.LittleEndian.AppendUint64(b, r.Size)
		b = binary.LittleEndian.AppendUint32(b, r.PageSize)
		b = appendBytes32(b, zero)
	}
	return b, nil
}

func appendString16(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBytes32(b, p []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

// decodePayload parses a payload. It checks every length against its cap
// and against what is left before slicing or allocating, and returns the
// first problem; the caller validates the result.
func decodePayload(p []byte) (*Descriptor, error) {
	r := reader{b: p}
	d := &Descriptor{}
	d.FamilyID = r.string16("family ID", MaxIDLen)
	copy(d.FamilyKey[:], r.next("family key", KeySize))
	d.ParentVM = r.string16("parent VM ID", MaxIDLen)
	d.CheckpointID = r.string16("checkpoint ID", MaxIDLen)
	sec, nsec := int64(r.u64("creation time")), r.u32("creation time")
	if r.err == nil && nsec >= 1e9 {
		r.fail("creation time has %d nanoseconds", nsec)
	}
	d.Created = time.Unix(sec, int64(nsec)).UTC()
	d.Backend = r.string16("backend", MaxNameLen)
	d.Machine = r.bytes32("machine configuration", MaxMachine)
	raw := r.u32("device state length")
	if r.err == nil && raw > MaxDeviceState {
		r.fail("device state is %d bytes, over the %d-byte limit", raw, MaxDeviceState)
	}
	d.DeviceState = r.inflate("device state", uint64(raw))
	n := r.u16("region count")
	if r.err == nil && (n == 0 || n > MaxRegions) {
		r.fail("%d memory regions: want 1 to %d", n, MaxRegions)
	}
	var total uint64
	for i := 0; r.err == nil && i < int(n); i++ {
		reg := Region{
			Name:     r.string16("region name", MaxNameLen),
			Size:     r.u64("region size"),
			PageSize: r.u32("region page size"),
		}
		if r.err != nil {
			break
		}
		// Check the geometry before inflating a bitmap sized by it.
		if err := checkGeometry(reg.Size, reg.PageSize); err != nil {
			r.fail("region %d (%q): %w", i, reg.Name, err)
			break
		}
		if total += reg.Size; total > MaxMemory {
			r.fail("regions total over %d bytes", uint64(MaxMemory))
			break
		}
		reg.Zero = r.inflate(fmt.Sprintf("region %q zero-page bitmap", reg.Name), bitmapLen(reg.Pages()))
		d.Regions = append(d.Regions, reg)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d unexpected bytes after the last region", len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return d, nil
}

// reader consumes a payload. After the first error every method returns
// zero values and the error stays.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

// next returns the next n bytes (aliasing the input), or nil if fewer are
// left.
func (r *reader) next(what string, n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("%s: payload truncated (%d bytes needed, %d left)", what, n, len(r.b))
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u16(what string) uint16 {
	if p := r.next(what, 2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (r *reader) u32(what string) uint32 {
	if p := r.next(what, 4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if p := r.next(what, 8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (r *reader) string16(what string, max int) string {
	n := r.u16(what)
	if r.err == nil && int(n) > max {
		r.fail("%s is %d bytes, over the %d-byte limit", what, n, max)
	}
	return string(r.next(what, uint64(n)))
}

// bytes32 returns a copy (nil if empty), so a Descriptor never aliases its
// input.
func (r *reader) bytes32(what string, max int) []byte {
	n := r.u32(what)
	if r.err == nil && uint64(n) > uint64(max) {
		r.fail("%s is %d bytes, over the %d-byte limit", what, n, max)
	}
	if p := r.next(what, uint64(n)); len(p) > 0 {
		return append([]byte{}, p...)
	}
	return nil
}

// inflate reads a u32-prefixed DEFLATE stream that must expand to n bytes.
func (r *reader) inflate(what string, n uint64) []byte {
	c := r.next(what, uint64(r.u32(what)))
	if r.err != nil {
		return nil
	}
	out, err := inflate(c, n)
	if err != nil {
		r.fail("%s: %w", what, err)
	}
	return out
}
