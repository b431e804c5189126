package saveimage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc64"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

var imageFlag = flag.String("image", "", "an `xl save` image for TestVerifyImage to split and join back")

// splitBytes splits img into an in-memory descriptor and memory image.
func splitBytes(t testing.TB, img []byte) (*Info, []byte, *memImage) {
	t.Helper()
	var desc bytes.Buffer
	mem := &memImage{max: 1 << 40}
	info, err := Split(context.Background(), bytes.NewReader(img), &desc, mem)
	if err != nil {
		t.Fatalf("Split: %v", err)
	}
	return info, desc.Bytes(), mem
}

func joinBytes(t testing.TB, desc []byte, mem io.ReaderAt) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := Join(context.Background(), bytes.NewReader(desc), mem, &out); err != nil {
		t.Fatalf("Join: %v", err)
	}
	return out.Bytes()
}

// TestRoundTripFile splits the standard PV image into a real file, checks
// the memory image page by page and its holes, and joins it back.
func TestRoundTripFile(t *testing.T) {
	im := pvSpec(3000).build()
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "mem"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(bytes.Repeat([]byte{0xee}, 1<<20)); err != nil { // stale content Split must clear
		t.Fatal(err)
	}
	var desc bytes.Buffer
	info, err := Split(context.Background(), bytes.NewReader(im.bytes), &desc, f)
	if err != nil {
		t.Fatalf("Split: %v", err)
	}

	if got := joinBytes(t, desc.Bytes(), f); !bytes.Equal(got, im.bytes) {
		t.Fatalf("Join(Split(x)) differs from x: %d bytes, want %d", len(got), len(im.bytes))
	}

	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != info.MemorySize || info.MemorySize != (highPFN+1)*pageSize {
		t.Fatalf("memory image is %d bytes, Info says %d, want %d", st.Size(), info.MemorySize, (highPFN+1)*pageSize)
	}
	page := make([]byte, pageSize)
	for pfn := uint64(0); pfn <= highPFN; pfn++ {
		if _, err := f.ReadAt(page, int64(pfn)*pageSize); err != nil {
			t.Fatalf("reading pfn %#x: %v", pfn, err)
		}
		want, ok := im.pages[pfn]
		if !ok {
			want = zeroPage[:]
		}
		if !bytes.Equal(page, want) {
			t.Fatalf("pfn %#x: memory image holds the wrong bytes", pfn)
		}
		if pfn > 64+3000 && pfn < highPFN {
			pfn = highPFN - 1 // the zeros in between were read by the hole check below
		}
	}
	// The gap between the bulk pages and highPFN is never written: a hole.
	gap := int64(64+3000+1) * pageSize
	next, err := unix.Seek(int(f.Fd()), gap, unix.SEEK_DATA)
	if err != nil {
		t.Fatalf("SEEK_DATA: %v", err)
	}
	if next < highPFN*pageSize {
		t.Errorf("SEEK_DATA from %#x finds data at %#x: the zero gap below pfn %#x is not a hole", gap, next, highPFN)
	}
	var sys syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &sys); err != nil {
		t.Fatal(err)
	}
	nonzero := int64(info.Pages-info.ZeroPages) * pageSize
	if alloc := sys.Blocks * 512; alloc > nonzero+(1<<20) {
		t.Errorf("memory image allocates %d bytes on disk for %d bytes of non-zero pages: zero pages are not holes", alloc, nonzero)
	}
}

// TestInfo checks the counts, the zero bitmap and the descriptor's size.
func TestInfo(t *testing.T) {
	im := pvSpec(3000).build()
	info, desc, _ := splitBytes(t, im.bytes)

	zeroPages := uint64(0)
	for _, p := range im.pages {
		if bytes.Equal(p, zeroPage[:]) {
			zeroPages++
		}
	}
	want := Info{
		Guest: GuestPV, XenMajor: 4, XenMinor: 17, StreamVersion: 3,
		PFNs: uint64(len(im.listed)), Pages: uint64(len(im.pages)), ZeroPages: zeroPages,
		PageRecords: 3 + 3 + 1, MaxPFN: highPFN, MemorySize: (highPFN + 1) * pageSize,
		DescriptorBytes: int64(len(desc)), ImageBytes: int64(len(im.bytes)),
	}
	got := *info
	got.Zero, got.ImageCRC = nil, 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Info\n got %+v\nwant %+v", got, want)
	}
	if len(info.Zero) != (highPFN+1)/8 {
		t.Fatalf("zero bitmap is %d bytes, want %d", len(info.Zero), (highPFN+1)/8)
	}
	for pfn := uint64(0); pfn <= highPFN; pfn++ {
		p, ok := im.pages[pfn]
		wantZero := !ok || bytes.Equal(p, zeroPage[:])
		if info.IsZero(pfn) != wantZero {
			t.Fatalf("zero bit of pfn %#x is %v, want %v (listed %v, has data %v)", pfn, info.IsZero(pfn), wantZero, im.listed[pfn], ok)
		}
	}
	for _, pfn := range []uint64{20, 27, 30, 31, 32, 40, 61, 69} { // zero pages, XTAB, BROKEN, XALLOC, a bulk zero page
		if !info.IsZero(pfn) {
			t.Errorf("pfn %d should be marked zero", pfn)
		}
	}
	if len(desc)*100 > len(im.bytes) {
		t.Errorf("descriptor is %d bytes for a %d-byte image: over 1%%", len(desc), len(im.bytes))
	}
	t.Logf("image %d bytes, descriptor %d bytes (%.3f%%), %v", len(im.bytes), len(desc), 100*float64(len(desc))/float64(len(im.bytes)), info)

	again, err := Inspect(bytes.NewReader(desc))
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if !reflect.DeepEqual(again, info) {
		t.Errorf("Inspect\n got %+v\nwant %+v", again, info)
	}
}

// TestVariants round-trips other valid images: HVM with emulator records,
// a v2 libxc stream (no STATIC_DATA_END), no optional data, no pages.
func TestVariants(t *testing.T) {
	hvm := baseSpec()
	hvm.guest = uint32(GuestHVM)
	hvm.mandatory = xlMandatoryFlagStreamV2 | xlMandatoryFlagJSON
	hvm.records = []rec{
		{typ: libxcRecX86CPUIDPolicy, body: blob(48, 1)},
		{typ: libxcRecStaticDataEnd},
		batch(0, span(pfinfoNotab, 0, 0xa0), map[uint64]bool{7: true}),
		batch(0, append(append(span(pfinfoXtab, 0xa0, 0xc0), span(pfinfoNotab, 0xc0, 0x100)...), span(pfinfoNotab, 0x100000, 0x100010)...), nil),
		{typ: libxcRecX86TSCInfo, body: blob(24, 2)},
		{typ: libxcRecHVMContext, body: blob(1234, 3)},
		{typ: libxcRecHVMParams, body: append(binary.LittleEndian.AppendUint64(nil, 2), blob(32, 4)...)},
		{typ: libxcRecEnd},
	}
	hvm.libxlAfter = []rec{
		{typ: libxlRecEmulatorXenstore, body: append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, "physmap/1/start_addr\x00f0000000\x00"...)},
		{typ: libxlRecEmulatorContext, body: append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, blob(5001, 5)...)},
		{typ: libxlRecEnd},
	}

	v2 := baseSpec()
	v2.version = 2
	v2.records = []rec{
		{typ: libxcRecX86PVInfo, body: []byte{8, 4, 0, 0, 0, 0, 0, 0}},
		batch(0, span(pfinfoNotab, 0, 10), nil),
		{typ: libxcRecEnd},
	}

	noConfig := pvSpec(0)
	noConfig.optData, noConfig.mandatory = nil, xlMandatoryFlagStreamV2

	noPages := baseSpec()
	noPages.records = []rec{{typ: libxcRecStaticDataEnd}, {typ: libxcRecEnd}}

	for name, s := range map[string]*imageSpec{"hvm": hvm, "v2": v2, "no-config": noConfig, "no-pages": noPages} {
		t.Run(name, func(t *testing.T) {
			im := s.build()
			info, desc, mem := splitBytes(t, im.bytes)
			if got := joinBytes(t, desc, sparseReader{mem, info.MemorySize}); !bytes.Equal(got, im.bytes) {
				t.Fatalf("Join(Split(x)) differs from x")
			}
			if info.Guest != GuestType(s.guest) || info.StreamVersion != s.version {
				t.Errorf("guest %v version %d, want %v %d", info.Guest, info.StreamVersion, GuestType(s.guest), s.version)
			}
			if n := uint64(len(im.listed)); info.PFNs != n {
				t.Errorf("PFNs %d, want %d", info.PFNs, n)
			}
			for pfn, p := range im.pages {
				got := make([]byte, pageSize)
				_, _ = mem.ReadAt(got, int64(pfn)*pageSize)
				if !bytes.Equal(got, p) {
					t.Fatalf("pfn %#x: wrong contents in the memory image", pfn)
				}
			}
		})
	}
}

func classOf(err error) string {
	switch {
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrUnsupported):
		return "unsupported"
	default:
		return "invalid"
	}
}

// TestMalformed refuses each malformed or unsupported variant with an
// error of the right class.
func TestMalformed(t *testing.T) {
	le := binary.LittleEndian
	pageAt := func(i int) func(s *imageSpec) *rec { // the i-th PAGE_DATA record
		return func(s *imageSpec) *rec {
			for j := range s.records {
				if s.records[j].typ == libxcRecPageData {
					if i == 0 {
						return &s.records[j]
					}
					i--
				}
			}
			panic("no such PAGE_DATA record")
		}
	}
	first := pageAt(0)
	insertBefore := func(s *imageSpec, typ uint32, r rec) {
		for i := range s.records {
			if s.records[i].typ == typ {
				s.records = append(s.records[:i], append([]rec{r}, s.records[i:]...)...)
				return
			}
		}
	}
	cases := []struct {
		name   string
		mutate func(s *imageSpec)
		class  string
	}{
		{"xl magic", func(s *imageSpec) { s.xlMagic = "Xen saved domain, xm format\n \x00 \r" }, "invalid"},
		{"xl big-endian", func(s *imageSpec) { s.byteorder = [4]byte{1, 2, 3, 4} }, "unsupported"},
		{"xl byte order", func(s *imageSpec) { s.byteorder = [4]byte{4, 3, 2, 0} }, "invalid"},
		{"xl unknown mandatory flag", func(s *imageSpec) { s.mandatory |= 1 << 2 }, "invalid"},
		{"xl legacy stream", func(s *imageSpec) { s.mandatory = xlMandatoryFlagJSON }, "unsupported"},
		{"xl optional data over cap", func(s *imageSpec) { s.optLenAdj = MaxOptionalData }, "invalid"},
		{"xl optional data too short", func(s *imageSpec) { s.optData = []byte{1, 2} }, "invalid"},
		{"xl config longer than optional data", func(s *imageSpec) { le.PutUint32(s.optData, uint32(len(s.optData))) }, "invalid"},
		{"libxl ident", func(s *imageSpec) { s.libxlIdent = 0x4c6962786c466d75 }, "invalid"},
		{"libxl version", func(s *imageSpec) { s.libxlVersion = 3 }, "unsupported"},
		{"libxl big-endian", func(s *imageSpec) { s.libxlOptions = libxlOptBigEndian }, "unsupported"},
		{"libxl record before LIBXC_CONTEXT", func(s *imageSpec) { s.libxlBefore = []rec{{typ: libxlRecEmulatorContext, body: blob(16, 0)}} }, "invalid"},
		{"LIBXC_CONTEXT with a body", func(s *imageSpec) { s.libxcContextLen = 8 }, "invalid"},
		{"libxl unknown record", func(s *imageSpec) { s.libxlAfter = []rec{{typ: 0x80000001}, {typ: libxlRecEnd}} }, "invalid"},
		{"libxl CHECKPOINT_END", func(s *imageSpec) { s.libxlAfter = []rec{{typ: libxlRecCheckpointEnd}, {typ: libxlRecEnd}} }, "unsupported"},
		{"libxl emulator record in PV", func(s *imageSpec) {
			s.libxlAfter = []rec{{typ: libxlRecEmulatorContext, body: blob(16, 0)}, {typ: libxlRecEnd}}
		}, "invalid"},
		{"libxl END with a body", func(s *imageSpec) { s.libxlAfter = []rec{{typ: libxlRecEnd, body: blob(8, 0)}} }, "invalid"},
		{"second LIBXC_CONTEXT", func(s *imageSpec) { s.libxlAfter = []rec{{typ: libxlRecLibxcContext}, {typ: libxlRecEnd}} }, "invalid"},
		{"libxc marker", func(s *imageSpec) { s.marker = 0xffffffff00000000 }, "invalid"},
		{"libxc id", func(s *imageSpec) { s.id = 0x58454E47 }, "invalid"},
		{"libxc version 4", func(s *imageSpec) { s.version = 4 }, "unsupported"},
		{"libxc version 1", func(s *imageSpec) { s.version = 1 }, "unsupported"},
		{"libxc big-endian", func(s *imageSpec) { s.ihdrOptions = libxcOptBigEndian }, "unsupported"},
		{"guest PVH", func(s *imageSpec) { s.guest = 3 }, "unsupported"},
		{"page shift", func(s *imageSpec) { s.pageShift = 16 }, "unsupported"},
		{"libxc record over REC_LENGTH_MAX", func(s *imageSpec) { s.records[0].lengthAdj = MaxRecordLength }, "invalid"},
		{"libxc record over metadata cap", func(s *imageSpec) { s.records[0].lengthAdj = MaxMetadataRecord }, "invalid"},
		{"libxc unknown mandatory record", func(s *imageSpec) { insertBefore(s, libxcRecEnd, rec{typ: 0x13, body: blob(8, 0)}) }, "invalid"},
		{"libxc CHECKPOINT", func(s *imageSpec) { insertBefore(s, libxcRecEnd, rec{typ: libxcRecCheckpoint}) }, "unsupported"},
		{"libxc VERIFY", func(s *imageSpec) { insertBefore(s, libxcRecEnd, rec{typ: libxcRecVerify}) }, "unsupported"},
		{"libxc second STATIC_DATA_END", func(s *imageSpec) { insertBefore(s, libxcRecEnd, rec{typ: libxcRecStaticDataEnd}) }, "invalid"},
		{"PAGE_DATA before STATIC_DATA_END", func(s *imageSpec) {
			insertBefore(s, libxcRecStaticDataEnd, batch(0, span(0, 100, 101), nil))
		}, "invalid"},
		{"libxc END with a body", func(s *imageSpec) { s.records[len(s.records)-1].body = blob(8, 0) }, "invalid"},
		{"PAGE_DATA count 0", func(s *imageSpec) { *first(s) = pageRec(0, nil, nil) }, "invalid"},
		{"PAGE_DATA count over cap", func(s *imageSpec) {
			r := first(s)
			le.PutUint32(r.body, MaxPFNsPerRecord+1)
		}, "invalid"},
		{"PAGE_DATA count beyond length", func(s *imageSpec) { le.PutUint32(first(s).body, 1<<15) }, "invalid"},
		{"PAGE_DATA length too short", func(s *imageSpec) { r := first(s); r.body, r.lengthAdj = r.body[:4], 0 }, "invalid"},
		{"PAGE_DATA length one page short", func(s *imageSpec) {
			r := first(s)
			r.body = r.body[:len(r.body)-pageSize]
		}, "invalid"},
		{"PAGE_DATA length one page long", func(s *imageSpec) {
			r := first(s)
			r.body = append(r.body, content(1)...)
		}, "invalid"},
		{"PAGE_DATA unknown page type", func(s *imageSpec) { *first(s) = batch(0, []uint64{entry(5, 100)}, nil) }, "invalid"},
		{"PAGE_DATA type 8", func(s *imageSpec) { *first(s) = batch(0, []uint64{entry(8, 100)}, nil) }, "invalid"},
		{"PAGE_DATA pfn over cap", func(s *imageSpec) { *first(s) = batch(0, []uint64{entry(0, MaxPFNs)}, nil) }, "invalid"},
		{"PAGE_DATA pfn twice in a record", func(s *imageSpec) { *first(s) = batch(0, []uint64{entry(0, 7), entry(0, 7)}, nil) }, "unsupported"},
		{"PAGE_DATA pfn again in a later record", func(s *imageSpec) {
			*pageAt(1)(s) = batch(0, []uint64{entry(pfinfoXtab, 3)}, nil)
		}, "unsupported"},
		{"trailing data", func(s *imageSpec) { s.trailing = []byte{0} }, "invalid"},
		{"trailing record", func(s *imageSpec) { s.trailing = make([]byte, 8) }, "invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := pvSpec(0)
			c.mutate(s)
			img := s.build().bytes
			var desc bytes.Buffer
			_, err := Split(context.Background(), bytes.NewReader(img), &desc, &memImage{max: 1 << 31})
			if err == nil {
				t.Fatal("Split accepted it")
			}
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error is not a *FormatError wrapping ErrInvalidArgument: %v", err)
			}
			if got := classOf(err); got != c.class {
				t.Errorf("error class %s, want %s: %v", got, c.class, err)
			}
			if desc.Len() != 0 {
				t.Errorf("Split wrote %d descriptor bytes for a bad image", desc.Len())
			}
			t.Log(err)
		})
	}
}

// TestTruncated cuts the image at every header and record boundary, just
// after each, and in the middle of each, and expects ErrTruncated.
func TestTruncated(t *testing.T) {
	im := pvSpec(0).build()
	cuts := map[int]bool{}
	for i, b := range im.bounds {
		cuts[b], cuts[b+1], cuts[b+5], cuts[b+8], cuts[b+12] = true, true, true, true, true
		if i+1 < len(im.bounds) {
			cuts[(b+im.bounds[i+1])/2] = true
			cuts[im.bounds[i+1]-1] = true
		}
	}
	n := 0
	for cut := range cuts {
		if cut >= len(im.bytes) {
			continue
		}
		n++
		_, err := Split(context.Background(), bytes.NewReader(im.bytes[:cut]), io.Discard, &memImage{max: 1 << 31})
		if !errors.Is(err, ErrTruncated) || !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("cut at %d of %d: want ErrTruncated, got %v", cut, len(im.bytes), err)
		}
	}
	t.Logf("%d cuts refused", n)
}

// TestDescriptorDamage: every damaged descriptor is refused before Join
// writes a byte.
func TestDescriptorDamage(t *testing.T) {
	im := pvSpec(0).build()
	info, desc, mem := splitBytes(t, im.bytes)
	mr := sparseReader{mem, info.MemorySize}

	check := func(t *testing.T, d []byte, class error) {
		t.Helper()
		var out bytes.Buffer
		err := Join(context.Background(), bytes.NewReader(d), mr, &out)
		if err == nil {
			t.Fatal("Join accepted it")
		}
		if !errors.Is(err, errdefs.ErrInvalidArgument) || (class != nil && !errors.Is(err, class)) {
			t.Fatalf("wrong error class (want %v): %v", class, err)
		}
		if out.Len() != 0 {
			t.Fatalf("Join wrote %d bytes before refusing the descriptor", out.Len())
		}
		if _, err := Inspect(bytes.NewReader(d)); err == nil {
			t.Fatal("Inspect accepted it")
		}
	}
	t.Run("every flipped byte", func(t *testing.T) {
		for i := range desc {
			d := bytes.Clone(desc)
			d[i] ^= 0x40
			check(t, d, nil)
		}
	})
	t.Run("every truncation", func(t *testing.T) {
		for i := range desc {
			check(t, desc[:i], ErrTruncated)
		}
	})
	t.Run("trailing byte", func(t *testing.T) { check(t, append(bytes.Clone(desc), 0), nil) })
	reversion := func(major, minor uint16) []byte {
		d := bytes.Clone(desc)
		binary.LittleEndian.PutUint16(d[8:], major)
		binary.LittleEndian.PutUint16(d[10:], minor)
		end := len(d) - envelopeCRCSize
		return binary.LittleEndian.AppendUint64(d[:end], crc64Of(d[:end]))
	}
	t.Run("unknown major", func(t *testing.T) { check(t, reversion(FormatMajor+1, 0), ErrUnsupportedVersion) })
	t.Run("major 0", func(t *testing.T) { check(t, reversion(0, 0), ErrUnsupportedVersion) })
	t.Run("newer minor", func(t *testing.T) { check(t, reversion(FormatMajor, FormatMinor+1), ErrUnsupportedVersion) })
	t.Run("same version re-sealed", func(t *testing.T) {
		if got := joinBytes(t, reversion(FormatMajor, FormatMinor), mr); !bytes.Equal(got, im.bytes) {
			t.Fatal("re-sealed descriptor joins differently")
		}
	})
}

// TestJoinChecksMemory: a memory image that does not match fails with
// ErrMismatch.
func TestJoinChecksMemory(t *testing.T) {
	im := pvSpec(0).build()
	info, desc, mem := splitBytes(t, im.bytes)

	bad := mem.clone()
	bad.pages[3][17] ^= 1
	err := Join(context.Background(), bytes.NewReader(desc), sparseReader{bad, info.MemorySize}, io.Discard)
	if !errors.Is(err, ErrMismatch) {
		t.Errorf("a flipped memory bit: want ErrMismatch, got %v", err)
	}
	err = Join(context.Background(), bytes.NewReader(desc), sparseReader{mem, 10 * pageSize}, io.Discard)
	if !errors.Is(err, ErrMismatch) {
		t.Errorf("a short memory image: want ErrMismatch, got %v", err)
	}
	werr := errors.New("pipe closed")
	err = Join(context.Background(), bytes.NewReader(desc), sparseReader{mem, info.MemorySize}, failWriter{werr})
	if !errors.Is(err, werr) || errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a failing writer: want its error, not a format error; got %v", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestContextCanceled(t *testing.T) {
	im := pvSpec(0).build()
	info, desc, mem := splitBytes(t, im.bytes)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Split(ctx, bytes.NewReader(im.bytes), io.Discard, &memImage{max: 1 << 31}); !errors.Is(err, context.Canceled) {
		t.Errorf("Split: want context.Canceled, got %v", err)
	}
	if err := Join(ctx, bytes.NewReader(desc), sparseReader{mem, info.MemorySize}, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("Join: want context.Canceled, got %v", err)
	}
}

// TestFIFO runs Split on a FIFO that another goroutine writes (as xl save
// would) and Join into one that another goroutine reads (as xl restore
// would).
func TestFIFO(t *testing.T) {
	im := pvSpec(2000).build()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "save.fifo"), filepath.Join(dir, "restore.fifo")
	for _, p := range []string{in, out} {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	errc := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(in, os.O_WRONLY, 0)
		if err == nil {
			for b := im.bytes; len(b) > 0 && err == nil; { // in odd-sized pieces
				n := min(len(b), 4093)
				_, err = f.Write(b[:n])
				b = b[n:]
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		errc <- err
	}()
	r, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Create(filepath.Join(dir, "mem"))
	if err != nil {
		t.Fatal(err)
	}
	var desc bytes.Buffer
	if _, err := Split(context.Background(), r, &desc, mem); err != nil {
		t.Fatalf("Split from a FIFO: %v", err)
	}
	r.Close()
	if err := <-errc; err != nil {
		t.Fatalf("writing the FIFO: %v", err)
	}

	got := make(chan []byte, 1)
	go func() {
		f, err := os.Open(out)
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(f)
		f.Close()
		got <- b
	}()
	w, err := os.OpenFile(out, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := Join(context.Background(), bytes.NewReader(desc.Bytes()), mem, w); err != nil {
		t.Fatalf("Join into a FIFO: %v", err)
	}
	w.Close()
	if !bytes.Equal(<-got, im.bytes) {
		t.Fatal("the image read from the FIFO differs from the original")
	}
}

func TestVerify(t *testing.T) {
	im := pvSpec(1000).build()
	info, err := Verify(context.Background(), bytes.NewReader(im.bytes))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if info.ImageBytes != int64(len(im.bytes)) || info.Pages != uint64(len(im.pages)) {
		t.Errorf("Verify's Info: %v", info)
	}
	if _, err := Verify(context.Background(), bytes.NewReader(im.bytes[:len(im.bytes)-1])); !errors.Is(err, ErrTruncated) {
		t.Errorf("Verify of a truncated image: want ErrTruncated, got %v", err)
	}
}

// TestVerifyImage checks a real image: go test -run TestVerifyImage
// -image FILE. Without -image it checks the standard synthetic one.
func TestVerifyImage(t *testing.T) {
	var r io.Reader = bytes.NewReader(pvSpec(100).build().bytes)
	if *imageFlag != "" {
		f, err := os.Open(*imageFlag)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r = f
	}
	info, err := Verify(context.Background(), r)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	t.Logf("%v (%.4f%% of the image)", info, 100*float64(info.DescriptorBytes)/float64(info.ImageBytes))
}

func TestFormatErrorMessage(t *testing.T) {
	s := pvSpec(0)
	le := binary.LittleEndian
	for i := range s.records {
		if s.records[i].typ == libxcRecPageData {
			le.PutUint32(s.records[i].body, 0)
			break
		}
	}
	_, err := Split(context.Background(), bytes.NewReader(s.build().bytes), io.Discard, &memImage{max: 1 << 31})
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("want a *FormatError, got %v", err)
	}
	if fe.In != "image" || fe.What != "libxc PAGE_DATA record (type 0x1)" || fe.Offset <= 0 {
		t.Errorf("FormatError %+v does not name the record and offset", fe)
	}
	if msg := err.Error(); !bytes.Contains([]byte(msg), []byte(fmt.Sprintf("offset %d", fe.Offset))) {
		t.Errorf("message %q lacks the offset", msg)
	}
}

func TestSizes(t *testing.T) {
	for name, c := range map[string][2]int{
		"xl header":        {xlHeaderSize, 48},
		"libxl header":     {libxlHeaderSize, 16},
		"libxc ihdr":       {libxcImageHeaderSize, 24},
		"libxc dhdr":       {libxcDomainHeaderSize, 16},
		"record header":    {recHeaderSize, 8},
		"page data header": {pageDataHeaderSize, 8},
		"envelope header":  {envelopeHeaderSize, 24},
		"xl magic":         {len(xlMagic), 32},
	} {
		if c[0] != c[1] {
			t.Errorf("%s: %d bytes, want %d", name, c[0], c[1])
		}
	}
	for typ := uint64(0); typ < 16; typ++ {
		known := typ <= 4 || (typ >= 9 && typ <= 15)
		if knownPageType(typ) != known {
			t.Errorf("page type %#x known=%v", typ, knownPageType(typ))
		}
		if known && pageTypeHasData(typ) != (typ <= 4 || (typ >= 9 && typ <= 12)) {
			t.Errorf("page type %#x has data=%v", typ, pageTypeHasData(typ))
		}
	}
}

func crc64Of(b []byte) uint64 { return crc64.Checksum(b, crcTable) }
