// Package descriptor is the VM descriptor: everything a clone starts from
// except the contents of its memory, in a versioned, checksummed file.
//
// Errors wrap the service's classes from errdefs, which clonesvc
// re-exports (errdefs.ErrInvalidArgument is clonesvc.ErrInvalidArgument).
package descriptor

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// Limits checked by MarshalBinary and Unmarshal. They bound what a parser
// allocates: nothing larger is read or written.
const (
	// MaxSize bounds a whole encoded descriptor (envelope included).
	MaxSize = 16 << 20
	// MaxIDLen bounds FamilyID, ParentVM and CheckpointID, in bytes.
	MaxIDLen = 256
	// MaxNameLen bounds Backend and region names, in bytes.
	MaxNameLen = 64
	// MaxMachine bounds the backend's machine configuration.
	MaxMachine = 1 << 20
	// MaxDeviceState bounds the device state before compression (QEMU q35
	// saves ~290 KB).
	MaxDeviceState = 8 << 20
	// MaxRegions bounds the number of memory regions.
	MaxRegions = 64
	// MaxMemory bounds the sum of the regions' sizes (so a zero-page bitmap
	// never exceeds 32 MiB in memory).
	MaxMemory = 1 << 40
	// MinPageSize and MaxPageSize bound a region's page size, a power of two.
	MinPageSize = 4096
	MaxPageSize = 1 << 30
)

// KeySize is the length of a family key in bytes.
const KeySize = 32

// Key is a clone family's secret: it encrypts and authenticates the pages
// mcdist sends. It never prints: every fmt verb, slog and text encodings
// (JSON included) show "[redacted]".
type Key [KeySize]byte

const redacted = "[redacted]"

// String returns "[redacted]".
func (Key) String() string { return redacted }

// GoString returns "[redacted]".
func (Key) GoString() string { return redacted }

// Format prints "[redacted]" for every verb, so %x or %d cannot leak it.
func (Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue keeps the key out of slog output.
func (Key) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "[redacted]", so JSON and other text encodings of a
// Descriptor do not carry the key (and cannot be read back as one).
func (Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// IsZero reports whether the key is unset (all zeros).
func (k *Key) IsZero() bool { return *k == Key{} }

// Descriptor is what a clone starts from: the family identity, the parent
// checkpoint it comes from, the backend's machine configuration and device
// state, and the memory layout with each region's zero pages. The memory
// itself is fetched on demand from the parent's frozen image.
type Descriptor struct {
	// FamilyID names the clone family (non-empty).
	FamilyID string
	// FamilyKey is the family's secret (not all zeros).
	FamilyKey Key
	// ParentVM is the ID of the VM that was checkpointed (non-empty).
	ParentVM string
	// CheckpointID names the checkpoint (non-empty).
	CheckpointID string
	// Created is when the checkpoint was made (set; kept to the nanosecond,
	// read back in UTC).
	Created time.Time
	// Backend is the name of the backend that made the checkpoint
	// (clonesvc.Checkpoint.Backend; non-empty).
	Backend string
	// Machine is the backend's opaque machine configuration
	// (clonesvc.Checkpoint.Machine).
	Machine []byte
	// DeviceState is the backend's saved device state (for QEMU, the
	// migration stream saved with x-ignore-shared). Stored compressed.
	DeviceState []byte
	// Regions is the memory layout, one entry per RAM region (at least one).
	Regions []Region
}

// Region is one RAM region of the machine.
type Region struct {
	// Name is the region's id in the machine (QEMU memory-backend id),
	// unique in the descriptor.
	Name string
	// Size is the region's size in bytes, a multiple of PageSize.
	Size uint64
	// PageSize is a power of two from MinPageSize to MaxPageSize.
	PageSize uint32
	// Zero has one bit per page (bit i%8 of byte i/8), set when the page was
	// all zeros at the checkpoint; bits past the last page are clear.
	Zero []byte
}

// Validate reports the first thing wrong with d, wrapping
// errdefs.ErrInvalidArgument.
func (d *Descriptor) Validate() error {
	if err := d.validate(); err != nil {
		return fmt.Errorf("descriptor: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	return nil
}

func (d *Descriptor) validate() error {
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"family ID", d.FamilyID, MaxIDLen},
		{"parent VM ID", d.ParentVM, MaxIDLen},
		{"checkpoint ID", d.CheckpointID, MaxIDLen},
		{"backend", d.Backend, MaxNameLen},
	} {
		if err := checkString(f.name, f.v, f.max); err != nil {
			return err
		}
	}
	if d.FamilyKey.IsZero() {
		return fmt.Errorf("family key is unset (all zeros)")
	}
	if d.Created.IsZero() {
		return fmt.Errorf("creation time is unset")
	}
	if len(d.Machine) > MaxMachine {
		return fmt.Errorf("machine configuration is %d bytes, over the %d-byte limit", len(d.Machine), MaxMachine)
	}
	if len(d.DeviceState) > MaxDeviceState {
		return fmt.Errorf("device state is %d bytes, over the %d-byte limit", len(d.DeviceState), MaxDeviceState)
	}
	if len(d.Regions) == 0 || len(d.Regions) > MaxRegions {
		return fmt.Errorf("%d memory regions: want 1 to %d", len(d.Regions), MaxRegions)
	}
	var total uint64
	seen := make(map[string]bool, len(d.Regions))
	for i := range d.Regions {
		r := &d.Regions[i]
		if err := r.validate(); err != nil {
			return fmt.Errorf("region %d (%q): %w", i, r.Name, err)
		}
		if seen[r.Name] {
			return fmt.Errorf("region %d: name %q used twice", i, r.Name)
		}
		seen[r.Name] = true
		total += r.Size // no overflow: each Size ≤ MaxMemory, count ≤ MaxRegions
	}
	if total > MaxMemory {
		return fmt.Errorf("regions total %d bytes, over the %d-byte limit", total, uint64(MaxMemory))
	}
	return nil
}

func (r *Region) validate() error {
	if err := checkString("name", r.Name, MaxNameLen); err != nil {
		return err
	}
	if err := checkGeometry(r.Size, r.PageSize); err != nil {
		return err
	}
	return checkBitmap(r.Zero, r.Pages())
}

// checkGeometry checks a region's size and page size.
func checkGeometry(size uint64, pageSize uint32) error {
	ps := uint64(pageSize)
	if ps < MinPageSize || ps > MaxPageSize || ps&(ps-1) != 0 {
		return fmt.Errorf("page size %d: want a power of two from %d to %d", pageSize, MinPageSize, MaxPageSize)
	}
	if size == 0 || size > MaxMemory || size%ps != 0 {
		return fmt.Errorf("size %d: want a non-zero multiple of the page size %d, at most %d", size, ps, uint64(MaxMemory))
	}
	return nil
}

func checkString(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > max:
		return fmt.Errorf("%s is %d bytes, over the %d-byte limit", what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	return nil
}

// String summarises d for logs; the key shows as "[redacted]".
func (d *Descriptor) String() string {
	var mem, zero uint64
	for i := range d.Regions {
		mem += d.Regions[i].Size
		zero += d.Regions[i].ZeroPages()
	}
	return fmt.Sprintf("descriptor{family %s key %s parent %s checkpoint %s backend %s created %s, %d regions %d MiB (%d zero pages), machine %d B, device state %d B}",
		d.FamilyID, redacted, d.ParentVM, d.CheckpointID, d.Backend, d.Created.UTC().Format(time.RFC3339Nano),
		len(d.Regions), mem>>20, zero, len(d.Machine), len(d.DeviceState))
}

// GoString prints d as Go syntax for %#v, with the key as "[redacted]" and
// the byte slices as their lengths.
func (d *Descriptor) GoString() string {
	var b strings.Builder
	fmt.Fprintf(&b, "&descriptor.Descriptor{FamilyID:%q, FamilyKey:%s, ParentVM:%q, CheckpointID:%q, Created:%q, Backend:%q, Machine:[%d bytes], DeviceState:[%d bytes], Regions:[]descriptor.Region{",
		d.FamilyID, redacted, d.ParentVM, d.CheckpointID, d.Created.Format(time.RFC3339Nano), d.Backend, len(d.Machine), len(d.DeviceState))
	for i, r := range d.Regions {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "{Name:%q, Size:%d, PageSize:%d, Zero:[%d bytes]}", r.Name, r.Size, r.PageSize, len(r.Zero))
	}
	b.WriteString("}}")
	return b.String()
}
