package saveimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A synthetic save-image generator, laid out as xl (save_domain_core_
// writeconfig), libxl (libxl_stream_write.c) and libxc (xg_sr_save.c,
// write_split_record) write one. Every field can be set wrong, so that the
// tests can build each malformed variant instead of patching offsets.

type imageSpec struct {
	xlMagic   string
	byteorder [4]byte
	mandatory uint32
	optional  uint32
	optData   []byte // the optional data as written; nil: none
	optLenAdj int    // added to optional_data_len

	libxlIdent      uint64
	libxlVersion    uint32
	libxlOptions    uint32
	libxlBefore     []rec // libxl records before LIBXC_CONTEXT
	libxcContextLen uint32

	marker      uint64
	id          uint32
	version     uint32
	ihdrOptions uint16
	guest       uint32
	pageShift   uint16
	xenMajor    uint32
	xenMinor    uint32
	records     []rec // libxc records, END included

	libxlAfter []rec // libxl records after the libxc stream, END included
	trailing   []byte
}

// rec is one record: {type, length, body, zero padding to 8}.
type rec struct {
	typ       uint32
	body      []byte
	lengthAdj int // added to the length field, not to the body
}

// pageRec builds a PAGE_DATA record: entries, then pages[i] for each entry
// whose type carries data.
func pageRec(reserved uint32, entries []uint64, pages [][]byte) rec {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(entries)))
	b = binary.LittleEndian.AppendUint32(b, reserved)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint64(b, e)
	}
	for _, p := range pages {
		b = append(b, p...)
	}
	return rec{typ: libxcRecPageData, body: b}
}

func entry(typ, pfn uint64) uint64 { return typ<<pageDataTypeShift | pfn }

// content is a page that is not all zeros and differs for each pfn.
func content(pfn uint64) []byte {
	p := make([]byte, pageSize)
	for i := 0; i < pageSize; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], pfn*0x9e3779b97f4a7c15+uint64(i)|1)
	}
	return p
}

func configJSON() []byte {
	cfg := []byte(`{"c_info":{"type":"pv","name":"sf-guest","uuid":"4b2d6d8e-8f3a-4a37-9c36-2b1f8d0b2a61"},"b_info":{"max_vcpus":2,"max_memkb":1048576,"target_memkb":1048576,"type.pv":{"kernel":"/boot/vmlinuz"}}}` + "\x00")
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(cfg))), cfg...)
}

// baseSpec is a valid image's framing with no libxc records yet.
func baseSpec() *imageSpec {
	return &imageSpec{
		xlMagic:      xlMagic,
		byteorder:    [4]byte{0x04, 0x03, 0x02, 0x01},
		mandatory:    xlMandatoryFlagJSON | xlMandatoryFlagStreamV2,
		optData:      configJSON(),
		libxlIdent:   libxlIdent,
		libxlVersion: libxlVersion,
		marker:       libxcMarker,
		id:           libxcID,
		version:      3,
		guest:        uint32(GuestPV),
		pageShift:    pageShift,
		xenMajor:     4,
		xenMinor:     17,
		libxlAfter:   []rec{{typ: libxlRecEnd}},
	}
}

// image is a built spec and what Split should find in it.
type image struct {
	bytes  []byte
	bounds []int             // where each header and record starts, and the end
	pages  map[uint64][]byte // pfn -> contents, for pages with data (zeros included)
	listed map[uint64]bool   // every pfn listed
}

func (s *imageSpec) build() *image {
	im := &image{pages: map[uint64][]byte{}, listed: map[uint64]bool{}}
	b := []byte(nil)
	mark := func() { im.bounds = append(im.bounds, len(b)) }
	le, be := binary.LittleEndian, binary.BigEndian

	mark()
	b = append(b, s.xlMagic...)
	b = append(b, s.byteorder[:]...)
	b = le.AppendUint32(b, s.mandatory)
	b = le.AppendUint32(b, s.optional)
	b = le.AppendUint32(b, uint32(len(s.optData)+s.optLenAdj))
	if len(s.optData) > 0 {
		mark()
		b = append(b, s.optData...)
	}

	mark()
	b = be.AppendUint64(b, s.libxlIdent)
	b = be.AppendUint32(b, s.libxlVersion)
	b = be.AppendUint32(b, s.libxlOptions)
	writeRec := func(r rec) {
		mark()
		b = le.AppendUint32(b, r.typ)
		b = le.AppendUint32(b, uint32(len(r.body)+r.lengthAdj))
		b = append(b, r.body...)
		b = append(b, make([]byte, (8-len(r.body)%8)%8)...) // padding follows the body, wherever the stream starts
	}
	for _, r := range s.libxlBefore {
		writeRec(r)
	}
	mark()
	b = le.AppendUint32(b, libxlRecLibxcContext)
	b = le.AppendUint32(b, s.libxcContextLen)

	mark()
	b = be.AppendUint64(b, s.marker)
	b = be.AppendUint32(b, s.id)
	b = be.AppendUint32(b, s.version)
	b = be.AppendUint16(b, s.ihdrOptions)
	b = append(b, make([]byte, 6)...)
	mark()
	b = le.AppendUint32(b, s.guest)
	b = le.AppendUint16(b, s.pageShift)
	b = append(b, 0, 0)
	b = le.AppendUint32(b, s.xenMajor)
	b = le.AppendUint32(b, s.xenMinor)
	for _, r := range s.records {
		writeRec(r)
		if r.typ == libxcRecPageData && len(r.body) >= 8 {
			im.notePages(r.body)
		}
	}
	for _, r := range s.libxlAfter {
		writeRec(r)
	}
	b = append(b, s.trailing...)
	mark()
	im.bytes = b
	return im
}

// notePages records what a well-formed PAGE_DATA body holds.
func (im *image) notePages(body []byte) {
	n := int(binary.LittleEndian.Uint32(body))
	if 8+8*n > len(body) {
		return
	}
	data := body[8+8*n:]
	for i := range n {
		e := binary.LittleEndian.Uint64(body[8+8*i:])
		pfn := e & pageDataPFNMask
		im.listed[pfn] = true
		if pageTypeHasData(e>>pageDataTypeShift) && len(data) >= pageSize {
			im.pages[pfn] = data[:pageSize]
			data = data[pageSize:]
		}
	}
}

func blob(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func vcpuRec(typ uint32, vcpu uint32, n int) rec {
	return rec{typ: typ, body: append(binary.LittleEndian.AppendUint64(nil, uint64(vcpu)), blob(n, byte(typ))...)}
}

// pvRecords is a PV guest's libxc records in xg_sr_save.c's order, with
// the given PAGE_DATA records in the middle.
func pvRecords(maxPFN uint64, pages ...rec) []rec {
	p2m := binary.LittleEndian.AppendUint32(nil, 0)
	p2m = binary.LittleEndian.AppendUint32(p2m, uint32(maxPFN))
	for i := uint64(0); i <= maxPFN/512; i++ {
		p2m = binary.LittleEndian.AppendUint64(p2m, 0x100+i)
	}
	tsc := binary.LittleEndian.AppendUint32(nil, 0)
	tsc = binary.LittleEndian.AppendUint32(tsc, 2_400_000)
	tsc = binary.LittleEndian.AppendUint64(tsc, 123456789)
	tsc = binary.LittleEndian.AppendUint64(tsc, 1)
	rs := []rec{
		{typ: libxcRecX86PVInfo, body: []byte{8, 4, 0, 0, 0, 0, 0, 0}},
		{typ: libxcRecX86CPUIDPolicy, body: blob(24*5, 1)},
		{typ: libxcRecX86MSRPolicy, body: blob(16*2, 2)},
		{typ: libxcRecStaticDataEnd},
		{typ: libxcRecX86PVP2MFrames, body: p2m},
	}
	rs = append(rs, pages...)
	rs = append(rs,
		rec{typ: libxcRecX86TSCInfo, body: tsc},
		rec{typ: libxcRecSharedInfo, body: blob(pageSize, 3)},
	)
	for v := range uint32(2) {
		rs = append(rs,
			vcpuRec(libxcRecX86PVVCPUBasic, v, 5168),
			vcpuRec(libxcRecX86PVVCPUExtended, v, 125), // 133 bytes: 3 of padding
			vcpuRec(libxcRecX86PVVCPUXsave, v, 846),
			vcpuRec(libxcRecX86PVVCPUMSRs, v, 16*3),
		)
	}
	return append(rs,
		rec{typ: libxcRecTypeOptional | 0x42, body: blob(13, 4)}, // an optional record a newer Xen might add
		rec{typ: libxcRecEnd},
	)
}

// batch is a PAGE_DATA record of entries, with content(pfn) for each page
// with data except the pfns in zeros, which get zero pages.
func batch(reserved uint32, entries []uint64, zeros map[uint64]bool) rec {
	var pages [][]byte
	for _, e := range entries {
		if !pageTypeHasData(e >> pageDataTypeShift) {
			continue
		}
		pfn := e & pageDataPFNMask
		if zeros[pfn] {
			pages = append(pages, make([]byte, pageSize))
		} else {
			pages = append(pages, content(pfn))
		}
	}
	return pageRec(reserved, entries, pages)
}

func span(typ, from, to uint64) []uint64 {
	var es []uint64
	for p := from; p < to; p++ {
		es = append(es, entry(typ, p))
	}
	return es
}

// highPFN is the highest pfn the standard images list: the last page of
// the first GiB.
const highPFN = 1<<18 - 1

// mixedBatches are PAGE_DATA records with every page type, zero pages, runs
// broken by type changes, pfns out of order, reserved bits set in an entry
// and in a header, a record without any data, and a page at highPFN.
// bulk adds a contiguous record of that many more pages.
func mixedBatches(bulk int) []rec {
	zeros := map[uint64]bool{}
	for p := uint64(20); p < 28; p++ {
		zeros[p] = true
	}
	zeros[40] = true
	var a []uint64
	a = append(a, span(pfinfoNotab, 0, 5)...)
	a = append(a, entry(pfinfoL1tab, 5), entry(0x2, 6), entry(0x3, 7), entry(pfinfoL4tab, 8))
	a = append(a, entry(pfinfoLpin|pfinfoL1tab, 9), entry(0xa, 10), entry(0xb, 11), entry(0xc, 12))
	a = append(a, span(pfinfoNotab, 13, 30)...)
	a = append(a, entry(pfinfoXtab, 30), entry(pfinfoBroken, 31), entry(pfinfoXalloc, 32))
	a = append(a, span(pfinfoXtab, 33, 36)...)
	a = append(a, span(pfinfoNotab, 36, 48)...)
	rs := []rec{batch(0, a, zeros)}

	b := []uint64{entry(pfinfoNotab, 60), entry(pfinfoNotab, 59), entry(pfinfoNotab, 58),
		entry(pfinfoNotab, 48) | 0x5a<<52, entry(pfinfoNotab, 49)}
	rs = append(rs, batch(0xdeadbeef, b, nil))
	rs = append(rs, batch(0, span(pfinfoXtab, 61, 64), nil))
	if bulk > 0 {
		bz := map[uint64]bool{}
		for p := uint64(64); p < uint64(64+bulk); p += 5 {
			bz[p] = true
		}
		for p := 64; p < 64+bulk; p += 1024 {
			rs = append(rs, batch(0, span(pfinfoNotab, uint64(p), uint64(min(p+1024, 64+bulk))), bz))
		}
	}
	rs = append(rs, batch(0, []uint64{entry(pfinfoNotab, highPFN)}, nil))
	return rs
}

// pvSpec is a valid PV image: mixedBatches plus bulk contiguous pages.
func pvSpec(bulk int) *imageSpec {
	s := baseSpec()
	s.records = pvRecords(highPFN, mixedBatches(bulk)...)
	return s
}

// memImage is a sparse in-memory memory image of at most max bytes: a map
// of written pages, so that a page at a high pfn costs one page.
type memImage struct {
	pages map[int64][]byte
	size  int64 // end of the highest write
	max   int64
}

var errMemFull = errors.New("memory image full")

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > m.max-int64(len(p)) {
		return 0, fmt.Errorf("write of %d bytes at %d: %w", len(p), off, errMemFull)
	}
	if m.pages == nil {
		m.pages = map[int64][]byte{}
	}
	for n := 0; n < len(p); {
		pg, in := (off+int64(n))/pageSize, int((off+int64(n))%pageSize)
		if m.pages[pg] == nil {
			m.pages[pg] = make([]byte, pageSize)
		}
		n += copy(m.pages[pg][in:], p[n:])
	}
	m.size = max(m.size, off+int64(len(p)))
	return len(p), nil
}

// ReadAt reads as a file of m.size bytes would.
func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	if off >= m.size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), m.size-off)]
	for n := 0; n < len(want); {
		pg, in := (off+int64(n))/pageSize, int((off+int64(n))%pageSize)
		if src := m.pages[pg]; src != nil {
			n += copy(want[n:], src[in:])
		} else {
			n += copy(want[n:], zeroPage[in:])
		}
	}
	if len(want) < len(p) {
		return len(want), io.EOF
	}
	return len(p), nil
}

func (m *memImage) clone() *memImage {
	c := &memImage{pages: map[int64][]byte{}, size: m.size, max: m.max}
	for k, v := range m.pages {
		c.pages[k] = bytes.Clone(v)
	}
	return c
}

// sparseReader reads a memory image whose unwritten tail is zeros, as a
// file truncated to MemorySize would.
type sparseReader struct {
	m    *memImage
	size int64
}

func (s sparseReader) ReadAt(p []byte, off int64) (int, error) {
	m := *s.m
	m.size = s.size
	return m.ReadAt(p, off)
}
