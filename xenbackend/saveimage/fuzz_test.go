package saveimage

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// fuzzLimits keep what one input can make Split or Join allocate small:
// bitmaps of 8 KiB, a memory image of at most 256 MiB of address space
// (and memImage refuses writes past 64 MiB).
var fuzzLimits = limits{pfns: 1 << 16, descriptor: 16 << 20, ioBuf: 4096}

const fuzzMem = 64 << 20

// tinySpec is a small valid PV image, a seed the fuzzer can mutate quickly.
func tinySpec() *imageSpec {
	s := baseSpec()
	s.optData = configJSON()[:4+12]
	binary.LittleEndian.PutUint32(s.optData, 12)
	s.records = []rec{
		{typ: libxcRecX86PVInfo, body: []byte{8, 4, 0, 0, 0, 0, 0, 0}},
		{typ: libxcRecStaticDataEnd},
		{typ: libxcRecX86PVP2MFrames, body: make([]byte, 16)},
		batch(0, []uint64{entry(pfinfoL1tab, 1), entry(pfinfoXtab, 2), entry(pfinfoNotab, 3)}, map[uint64]bool{3: true}),
		batch(7, []uint64{entry(pfinfoXtab, 9) | 3<<52, entry(pfinfoXalloc, 8), entry(pfinfoBroken, 0)}, nil),
		{typ: libxcRecX86TSCInfo, body: blob(24, 1)},
		{typ: libxcRecX86PVVCPUExtended, body: blob(13, 2)},
		{typ: libxcRecEnd},
	}
	return s
}

func fuzzSeeds() [][]byte {
	tiny := tinySpec().build().bytes
	hvm := tinySpec()
	hvm.guest = uint32(GuestHVM)
	hvm.libxlAfter = []rec{{typ: libxlRecEmulatorContext, body: blob(20, 3)}, {typ: libxlRecEnd}}
	v2 := tinySpec()
	v2.version = 2
	return [][]byte{tiny, tiny[:len(tiny)/2], hvm.build().bytes, v2.build().bytes}
}

// FuzzSplit: no input panics or allocates past the limits; every refusal
// is a format error (or the bounded memory image filling up) and writes no
// descriptor; every accepted input joins back to itself byte for byte.
func FuzzSplit(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		ctx := context.Background()
		mem := &memImage{max: fuzzMem}
		var desc bytes.Buffer
		info, err := split(ctx, bytes.NewReader(img), &desc, mem, &fuzzLimits)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, errMemFull) {
				t.Fatalf("error is neither a format error nor a full memory image: %v", err)
			}
			if desc.Len() != 0 {
				t.Fatalf("Split wrote a descriptor for a refused image")
			}
			return
		}
		var out bytes.Buffer
		if err := join(ctx, bytes.NewReader(desc.Bytes()), sparseReader{mem, info.MemorySize}, &out, &fuzzLimits); err != nil {
			t.Fatalf("Join of an accepted image: %v", err)
		}
		if !bytes.Equal(out.Bytes(), img) {
			t.Fatalf("Join(Split(x)) != x")
		}
		again, err := Inspect(bytes.NewReader(desc.Bytes()))
		if err != nil || !reflect.DeepEqual(again, info) {
			t.Fatalf("Inspect: %v\n got %#v\nwant %#v", err, again, info)
		}
	})
}

// FuzzJoin feeds Join arbitrary descriptor bytes; random ones rarely pass
// the checksum, which FuzzDescriptorBody goes behind.
func FuzzJoin(f *testing.F) {
	desc, mem := fuzzSplit(f, tinySpec().build().bytes)
	f.Add(desc)
	f.Add(desc[:len(desc)-1])
	f.Add([]byte(DescriptorMagic))
	f.Fuzz(func(t *testing.T, d []byte) { checkJoin(t, d, mem) })
}

// FuzzDescriptorBody seals arbitrary bodies in a valid envelope and joins
// them: the body decoder must refuse what does not add up, and never write
// more than the summary's image size.
func FuzzDescriptorBody(f *testing.F) {
	var mem io.ReaderAt
	for _, img := range fuzzSeeds()[2:] {
		d, m := fuzzSplit(f, img)
		f.Add(bodyOf(f, d))
		mem = m
	}
	d, _ := fuzzSplit(f, tinySpec().build().bytes)
	f.Add(bodyOf(f, d))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := seal(body)
		if err != nil {
			t.Skip("body too large to seal")
		}
		checkJoin(t, d, mem)
	})
}

func fuzzSplit(tb testing.TB, img []byte) ([]byte, io.ReaderAt) {
	tb.Helper()
	mem := &memImage{max: fuzzMem}
	var desc bytes.Buffer
	info, err := split(context.Background(), bytes.NewReader(img), &desc, mem, &fuzzLimits)
	if err != nil {
		tb.Fatal(err)
	}
	return desc.Bytes(), sparseReader{mem, info.MemorySize}
}

// bodyOf inflates a descriptor's body.
func bodyOf(tb testing.TB, desc []byte) []byte {
	tb.Helper()
	n := binary.LittleEndian.Uint32(desc[envelopeHeaderSize-4:])
	b, err := io.ReadAll(flate.NewReader(bytes.NewReader(desc[envelopeHeaderSize : envelopeHeaderSize+int(n)])))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// limitWriter fails once more than n bytes have been written.
type limitWriter struct{ n int64 }

var errTooMuch = errors.New("output over the fuzzing limit")

func (w *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.n {
		return 0, errTooMuch
	}
	w.n -= int64(len(p))
	return len(p), nil
}

func checkJoin(t *testing.T, d []byte, mem io.ReaderAt) {
	const max = 64 << 20
	w := &limitWriter{n: max}
	err := join(context.Background(), bytes.NewReader(d), mem, w, &fuzzLimits)
	info, ierr := Inspect(bytes.NewReader(d))
	if err != nil {
		if !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, ErrMismatch) && !errors.Is(err, errTooMuch) {
			t.Fatalf("Join: unexpected error class: %v", err)
		}
		return
	}
	if ierr != nil {
		t.Fatalf("Join accepted a descriptor Inspect refuses: %v", ierr)
	}
	if wrote := max - w.n; wrote != info.ImageBytes {
		t.Fatalf("Join wrote %d bytes, Inspect says the image has %d", wrote, info.ImageBytes)
	}
}
