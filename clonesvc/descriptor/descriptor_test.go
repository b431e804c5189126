package descriptor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

func TestRoundTrip(t *testing.T) {
	for name, d := range map[string]*Descriptor{"small": small(), "q35": q35()} {
		t.Run(name, func(t *testing.T) {
			checkRoundTrip(t, d) // equal after decoding, same bytes re-encoded
		})
	}
}

func TestRoundTripLocalTimeAndEmptyFields(t *testing.T) {
	d := small()
	d.Created = time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	d.Machine, d.DeviceState = nil, nil
	got, err := Unmarshal(mustMarshal(t, d))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(d.Created) || got.Created.Location() != time.UTC {
		t.Errorf("Created = %v, want %v in UTC", got.Created, d.Created)
	}
	if got.Machine != nil || got.DeviceState != nil {
		t.Errorf("empty fields came back as %q, %q", got.Machine, got.DeviceState)
	}
}

// The target of issue 3: a 1 GiB q35 guest's descriptor is at most 0.5 MB.
func TestSizeQ35(t *testing.T) {
	d := q35()
	b := mustMarshal(t, d)
	state, _ := deflate(d.DeviceState)
	zero, _ := deflate(d.Regions[0].Zero)
	t.Logf("1 GiB q35: %d bytes encoded (device state %d → %d, bitmap %d → %d, %d of %d pages zero)",
		len(b), len(d.DeviceState), len(state), len(d.Regions[0].Zero), len(zero), d.Regions[0].ZeroPages(), d.Regions[0].Pages())
	if len(b) > 500_000 {
		t.Errorf("descriptor is %d bytes, over the 0.5 MB target", len(b))
	}
	// Worst case for the bitmap: no runs at all.
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range d.Regions[0].Zero {
		d.Regions[0].Zero[i] = byte(rng.Uint32())
	}
	if b := mustMarshal(t, d); len(b) > 500_000 {
		t.Errorf("with a run-free bitmap the descriptor is %d bytes, over 0.5 MB", len(b))
	} else {
		t.Logf("with a run-free bitmap: %d bytes", len(b))
	}
}

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "desc")
	d := small()
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, d); err != nil {
		t.Fatalf("Write: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("descriptor file mode %v, want 0600 (it holds the family key)", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("Write left %d files in the directory, want 1", len(ents))
	}
	got, err := Read(path)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !reflect.DeepEqual(got, d) {
		t.Fatal("Read returned another descriptor than was written")
	}
}

func TestWriteInvalidLeavesOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "desc")
	if err := Write(path, small()); err != nil {
		t.Fatal(err)
	}
	bad := small()
	bad.FamilyID = ""
	if err := Write(path, bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Write(invalid) = %v, want ErrInvalidArgument", err)
	}
	if _, err := Read(path); err != nil {
		t.Fatalf("the old descriptor no longer reads: %v", err)
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Read(filepath.Join(dir, "missing"))
	if !errors.Is(err, errdefs.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(missing) = %v, want ErrNotFound and fs.ErrNotExist", err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, MaxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Read(big)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "limit") {
		t.Errorf("Read(oversized) = %v, want ErrInvalidArgument naming the limit", err)
	}
}

// Any change to an encoded descriptor is caught: every bit of every byte.
func TestEveryBitFlipIsRejected(t *testing.T) {
	b := mustMarshal(t, small())
	for i := range b {
		for bit := range 8 {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			if _, err := Unmarshal(c); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("flipping bit %d of byte %d/%d: err = %v, want ErrInvalidArgument", bit, i, len(b), err)
			}
		}
	}
}

func TestTruncatedOrExtendedIsRejected(t *testing.T) {
	b := mustMarshal(t, small())
	for n := range len(b) {
		if _, err := Unmarshal(b[:n]); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("truncated to %d of %d bytes: err = %v", n, len(b), err)
		}
	}
	if _, err := Unmarshal(append(bytes.Clone(b), 0)); err == nil || !strings.Contains(err.Error(), "length") {
		t.Errorf("one trailing byte: err = %v, want a length error", err)
	}
}

func TestEnvelopeErrorsNameTheCause(t *testing.T) {
	good := mustMarshal(t, small())
	payload := payloadOf(good)
	for _, tc := range []struct {
		name    string
		b       []byte
		want    string
		version bool
	}{
		{"not a descriptor", []byte("#!/bin/sh\necho hello world\n"), "bad magic", false},
		{"wrong magic", append([]byte("SFDESC\x00\x01"), good[8:]...), "bad magic", false},
		{"major 0", seal(0, 0, payload), "version 0.0", true},
		{"major 2", seal(2, 0, payload), "version 2.0", true},
		{"newer minor", seal(FormatMajor, FormatMinor+1, payload), fmt.Sprintf("version %d.%d", FormatMajor, FormatMinor+1), true},
		{"bad checksum", append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1), "checksum mismatch", false},
		{"short header", good[:headerSize-1], "truncated", false},
		{"oversized", make([]byte, MaxSize+1), "limit", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unmarshal(tc.b)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidArgument mentioning %q", err, tc.want)
			}
			if errors.Is(err, ErrUnsupportedVersion) != tc.version {
				t.Errorf("errors.Is(err, ErrUnsupportedVersion) = %v, want %v", !tc.version, tc.version)
			}
		})
	}
	for minor := range uint16(FormatMinor + 1) {
		if _, err := Unmarshal(seal(FormatMajor, minor, payload)); err != nil {
			t.Errorf("minor version %d (not newer than %d) refused: %v", minor, FormatMinor, err)
		}
	}
}

// Validation runs on both sides: MarshalBinary refuses a bad descriptor,
// and Unmarshal refuses the same descriptor encoded without validation.
func TestValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(d *Descriptor)
		want string
	}{
		{"empty family", func(d *Descriptor) { d.FamilyID = "" }, "family ID is empty"},
		{"long parent", func(d *Descriptor) { d.ParentVM = strings.Repeat("p", MaxIDLen+1) }, "parent VM ID is 257 bytes"},
		{"bad UTF-8", func(d *Descriptor) { d.CheckpointID = "cp\xff" }, "not valid UTF-8"},
		{"long backend", func(d *Descriptor) { d.Backend = strings.Repeat("b", MaxNameLen+1) }, "backend is 65 bytes"},
		{"zero key", func(d *Descriptor) { d.FamilyKey = Key{} }, "family key is unset"},
		{"epoch is a valid time", func(d *Descriptor) { d.Created = time.Unix(0, 0) }, ""},
		{"no regions", func(d *Descriptor) { d.Regions = nil }, "0 memory regions"},
		{"too many regions", func(d *Descriptor) {
			for i := range MaxRegions {
				d.Regions = append(d.Regions, Region{Name: fmt.Sprint("r", i), Size: 4096, PageSize: 4096, Zero: []byte{1}})
			}
		}, "66 memory regions"},
		{"duplicate region", func(d *Descriptor) { d.Regions[1].Name = d.Regions[0].Name }, "used twice"},
		{"empty region name", func(d *Descriptor) { d.Regions[0].Name = "" }, "name is empty"},
		{"page size 2048", func(d *Descriptor) { d.Regions[0].PageSize = 2048 }, "page size 2048"},
		{"page size not power of two", func(d *Descriptor) { d.Regions[0].PageSize = 12288 }, "page size 12288"},
		{"page size 2 GiB", func(d *Descriptor) { d.Regions[0].PageSize = 2 << 30 }, "page size 2147483648"},
		{"size not page multiple", func(d *Descriptor) { d.Regions[0].Size += 512 }, "non-zero multiple"},
		{"size zero", func(d *Descriptor) { d.Regions[0].Size = 0 }, "non-zero multiple"},
		{"bitmap short", func(d *Descriptor) { d.Regions[0].Zero = d.Regions[0].Zero[1:] }, "255 bytes, want 256"},
		{"bitmap long", func(d *Descriptor) { d.Regions[1].Zero = []byte{0, 0} }, "zero-page bitmap"},
		{"bits past end", func(d *Descriptor) { d.Regions[1].Zero = []byte{0x10} }, "bits set past page 3"},
		{"too much memory", func(d *Descriptor) {
			d.Regions[0] = Region{Name: "big", Size: MaxMemory, PageSize: MaxPageSize, Zero: make([]byte, 128)}
		}, "regions total"},
		{"machine too big", func(d *Descriptor) { d.Machine = make([]byte, MaxMachine+1) }, "machine configuration is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := small()
			tc.edit(d)
			_, merr := d.MarshalBinary()
			enc, err := encodePayload(nil, d)
			if err != nil {
				t.Fatal(err)
			}
			_, uerr := Unmarshal(seal(FormatMajor, FormatMinor, enc))
			if tc.want == "" {
				if merr != nil || uerr != nil {
					t.Fatalf("valid descriptor refused: marshal %v, unmarshal %v", merr, uerr)
				}
				return
			}
			for side, err := range map[string]error{"MarshalBinary": merr, "Unmarshal": uerr} {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: err = %v, want ErrInvalidArgument mentioning %q", side, err, tc.want)
				}
			}
		})
	}
}

func TestMarshalRefusesUnsetTime(t *testing.T) {
	d := small()
	d.Created = time.Time{}
	if _, err := d.MarshalBinary(); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "creation time") {
		t.Fatalf("err = %v, want an unset creation time error", err)
	}
}

// Payload problems behind a valid envelope: the parser names each and
// allocates by what it reads, not by what a length field claims.
func TestPayloadErrors(t *testing.T) {
	good := payloadOf(mustMarshal(t, small()))
	// Offsets in small()'s payload.
	stateLen := 2 + 5 + KeySize + 2 + 9 + 2 + 4 + 8 + 4 + 2 + 3 + 4 + len(small().Machine)
	stateComp := stateLen + 4
	n := int(binary.LittleEndian.Uint32(good[stateComp:]))
	regions := stateComp + 4 + n
	put32 := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	for _, tc := range []struct {
		name string
		p    []byte
		want string
	}{
		{"state raw length over cap", put32(stateLen, MaxDeviceState+1), "device state is 8388609 bytes"},
		{"state raw length forged huge", put32(stateLen, MaxDeviceState), "compressed data holds 3000 bytes"},
		{"state raw length short", put32(stateLen, 2999), "more than 2999"},
		{"compressed length past end", put32(stateComp, uint32(len(good))), "payload truncated"},
		{"garbage compressed data", func() []byte {
			b := bytes.Clone(good)
			copy(b[stateComp+4:], bytes.Repeat([]byte{0xff}, 8))
			return b
		}(), "device state: bad compressed data"},
		{"zero regions", func() []byte {
			b := bytes.Clone(good[:regions+2])
			binary.LittleEndian.PutUint16(b[regions:], 0)
			return b
		}(), "0 memory regions"},
		{"trailing bytes", append(bytes.Clone(good), 0), "1 unexpected bytes"},
		{"missing region", good[:len(good)-1], "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unmarshal(seal(FormatMajor, FormatMinor, tc.p))
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidArgument mentioning %q", err, tc.want)
			}
		})
	}
}

func TestRegionHelpers(t *testing.T) {
	r := Region{Name: "r", Size: 20 * 4096, PageSize: 4096, Zero: []byte{0b1000_0001, 0xff, 0b1000}}
	var zero []uint64
	for p := range uint64(25) {
		if r.IsZero(p) {
			zero = append(zero, p)
		}
	}
	want := []uint64{0, 7, 8, 9, 10, 11, 12, 13, 14, 15, 19}
	if !reflect.DeepEqual(zero, want) {
		t.Errorf("zero pages %v, want %v", zero, want)
	}
	if r.Pages() != 20 || r.ZeroPages() != uint64(len(want)) {
		t.Errorf("Pages, ZeroPages = %d, %d, want 20, %d", r.Pages(), r.ZeroPages(), len(want))
	}
	d := q35()
	var n uint64
	for p := range d.Regions[0].Pages() {
		if d.Regions[0].IsZero(p) {
			n++
		}
	}
	if got := d.Regions[0].ZeroPages(); got != n {
		t.Errorf("ZeroPages = %d, counting IsZero gives %d", got, n)
	}
}

// The family key never shows in printed, logged or JSON output.
func TestKeyNeverPrinted(t *testing.T) {
	d := small()
	leaks := []string{
		fmt.Sprintf("%x", testKey[:4]), fmt.Sprintf("%X", testKey[:4]),
		strings.Trim(fmt.Sprint(testKey[:3]), "[]"), "165,90,195", // decimal
		string(testKey[:4]), "pVrDPA", // raw, base64
	}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
		out = append(out, fmt.Sprintf(verb, d), fmt.Sprintf(verb, *d), fmt.Sprintf(verb, d.FamilyKey), fmt.Sprintf(verb, &d.FamilyKey))
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "d", d, "dv", *d, "key", d.FamilyKey)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "d", d, "key", d.FamilyKey)
	js, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, logs.String(), string(js))
	for _, s := range out {
		for _, leak := range leaks {
			if strings.Contains(s, leak) {
				t.Fatalf("output leaks the key (%q):\n%s", leak, s)
			}
		}
	}
	if !strings.Contains(d.String(), "[redacted]") || !strings.Contains(fmt.Sprintf("%#v", d), "FamilyKey:[redacted]") {
		t.Errorf("String/GoString do not show the key as redacted: %s / %#v", d, d)
	}
	var back Descriptor
	if err := json.Unmarshal(js, &back); err == nil {
		t.Error("JSON of a descriptor read back as a key")
	}
}
