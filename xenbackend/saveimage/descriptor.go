package saveimage

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"sync"
)

// The descriptor envelope (see the package comment for the whole format).
const (
	// DescriptorMagic starts every descriptor. The high first byte catches
	// text-mode mangling, the final newline line-ending conversion.
	DescriptorMagic = "\x89SFXSAV\n"
	// FormatMajor and FormatMinor are the descriptor format's own version,
	// not a release's. A reader refuses another major and a newer minor.
	FormatMajor = 1
	FormatMinor = 0

	envelopeHeaderSize = len(DescriptorMagic) + 2 + 2 + 8 + 4
	envelopeCRCSize    = 8
)

// Descriptor body ops.
const (
	opEnd     = 0
	opLiteral = 1
	opPages   = 2
)

var crcTable = crc64.MakeTable(crc64.ECMA)

// flateWriters reuses compressors. BestSpeed: a body is mostly runs and
// bitmaps, which it packs within about 10% of the default level, and its
// reset does not clear the default level's 512 KiB hash table.
var flateWriters = sync.Pool{New: func() any {
	w, err := flate.NewWriter(nil, flate.BestSpeed)
	if err != nil {
		panic(err) // flate.NewWriter fails only for a bad level
	}
	return w
}}

// limits are the caps Split and Join apply. Tests and fuzzing use smaller
// ones; everything else uses defaultLimits.
type limits struct {
	pfns       uint64 // every pfn is below this (MaxPFNs)
	descriptor uint64 // MaxDescriptorSize
	ioBuf      int    // bytes of read-ahead for Split and of write-behind for Join
}

var defaultLimits = limits{pfns: MaxPFNs, descriptor: MaxDescriptorSize, ioBuf: 256 << 10}

// summary is the head of a descriptor body: what Info reports, less the
// zero bitmap (which follows it) and the descriptor's own size.
type summary struct {
	guest        GuestType
	xenMajor     uint32
	xenMinor     uint32
	libxcVersion uint32
	imageBytes   uint64
	imageCRC     uint32
	pfns         uint64 // pfn entries in all PAGE_DATA records
	pages        uint64 // of them, with page contents in the stream
	zeroPages    uint64 // of those, all zeros
	pageRecords  uint64
	memPFNs      uint64 // max pfn + 1, or 0 when no pfn was listed
}

func (s *summary) append(b []byte) []byte {
	for _, v := range []uint64{uint64(s.guest), uint64(s.xenMajor), uint64(s.xenMinor), uint64(s.libxcVersion), s.imageBytes} {
		b = binary.AppendUvarint(b, v)
	}
	b = binary.LittleEndian.AppendUint32(b, s.imageCRC)
	for _, v := range []uint64{s.pfns, s.pages, s.zeroPages, s.pageRecords, s.memPFNs} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// opEncoder builds a descriptor body's ops as Split goes.
type opEncoder struct {
	ops   []byte
	lit   []byte // literal bytes not yet in ops
	hi    uint64 // run state: the high 12 bits of the last entry
	next  uint64 // run state: the pfn after the last run
	limit uint64
}

func (e *opEncoder) size() uint64 { return uint64(len(e.ops) + len(e.lit)) }

func (e *opEncoder) errFull() error {
	return fmt.Errorf("the descriptor would exceed %d bytes", e.limit)
}

// literal appends p to the bytes copied verbatim.
func (e *opEncoder) literal(p []byte) error {
	if e.size()+uint64(len(p)) > e.limit {
		return e.errFull()
	}
	e.lit = append(e.lit, p...)
	return nil
}

func (e *opEncoder) flushLiteral() {
	if len(e.lit) == 0 {
		return
	}
	e.ops = append(e.ops, opLiteral)
	e.ops = binary.AppendUvarint(e.ops, uint64(len(e.lit)))
	e.ops = append(e.ops, e.lit...)
	e.lit = e.lit[:0]
}

// pages appends one PAGE_DATA record's layout. Precondition: every entry's
// pfn is below MaxPFNs (so that entry+1 never carries out of the pfn bits).
func (e *opEncoder) pages(reserved uint32, entries []uint64) error {
	e.flushLiteral()
	e.ops = append(e.ops, opPages)
	e.ops = binary.AppendUvarint(e.ops, uint64(reserved))
	e.ops = binary.AppendUvarint(e.ops, uint64(len(entries)))
	for i := 0; i < len(entries); {
		j := i + 1
		for j < len(entries) && entries[j] == entries[j-1]+1 {
			j++
		}
		hi, pfn := entries[i]>>52, entries[i]&pageDataPFNMask
		tag := uint64(j-i-1) << 1
		if hi != e.hi {
			tag |= 1
		}
		e.ops = binary.AppendUvarint(e.ops, tag)
		if hi != e.hi {
			e.ops = binary.AppendUvarint(e.ops, hi)
			e.hi = hi
		}
		e.ops = binary.AppendVarint(e.ops, int64(pfn)-int64(e.next))
		e.next = pfn + uint64(j-i)
		i = j
	}
	if e.size() > e.limit {
		return e.errFull()
	}
	return nil
}

func (e *opEncoder) end() {
	e.flushLiteral()
	e.ops = append(e.ops, opEnd)
}

// seal compresses body and wraps it in the envelope.
func seal(body []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(envelopeHeaderSize + len(body)/4 + 64)
	buf.WriteString(DescriptorMagic)
	var hdr [2 + 2 + 8 + 4]byte
	buf.Write(hdr[:]) // filled in below
	fw := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(fw)
	fw.Reset(&buf)
	if _, err := fw.Write(body); err != nil {
		return nil, fmt.Errorf("saveimage: compressing the descriptor: %w", err)
	}
	if err := fw.Close(); err != nil {
		return nil, fmt.Errorf("saveimage: compressing the descriptor: %w", err)
	}
	b := buf.Bytes()
	payload := len(b) - envelopeHeaderSize
	if uint64(payload) > MaxDescriptorSize {
		return nil, fmt.Errorf("saveimage: the descriptor compresses to %d bytes, over the %d-byte limit", payload, MaxDescriptorSize)
	}
	h := b[len(DescriptorMagic):]
	binary.LittleEndian.PutUint16(h[0:], FormatMajor)
	binary.LittleEndian.PutUint16(h[2:], FormatMinor)
	binary.LittleEndian.PutUint64(h[4:], uint64(len(body)))
	binary.LittleEndian.PutUint32(h[12:], uint32(payload))
	return binary.LittleEndian.AppendUint64(b, crc64.Checksum(b, crcTable)), nil
}

func descError(off int64, what, msg string, class error) error {
	return &FormatError{In: "descriptor", Offset: off, What: what, Msg: msg, class: class}
}

// bodyError is descError for a problem inside the body: off counts
// uncompressed body bytes.
func bodyError(off int64, what, msg string, class error) error {
	return &FormatError{In: "descriptor body", Offset: off, What: what, Msg: msg, class: class}
}

// readGrowing reads exactly n bytes from r, allocating in step with what
// arrives rather than n up front. It returns fewer bytes only with an error.
func readGrowing(r io.Reader, n uint64) ([]byte, error) {
	var buf bytes.Buffer
	got, err := io.Copy(&buf, io.LimitReader(r, int64(n)))
	if err == nil && uint64(got) < n {
		err = io.ErrUnexpectedEOF
	}
	return buf.Bytes(), err
}

// openDescriptor reads and checks a whole descriptor envelope from r (which
// must end with it) and returns a reader of its body, the body's length and
// the envelope's size.
func openDescriptor(r io.Reader, lim *limits) (*bodyReader, int64, error) {
	var hdr [envelopeHeaderSize]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, 0, descError(int64(n), "envelope header", fmt.Sprintf("the descriptor ends after %d bytes, inside its %d-byte header", n, envelopeHeaderSize), ErrTruncated)
		}
		return nil, 0, fmt.Errorf("saveimage: reading the descriptor: %w", err)
	}
	if string(hdr[:len(DescriptorMagic)]) != DescriptorMagic {
		return nil, 0, descError(0, "envelope header", fmt.Sprintf("bad magic %q: not a SnowFlock Xen save-image descriptor", hdr[:len(DescriptorMagic)]), nil)
	}
	h := hdr[len(DescriptorMagic):]
	major, minor := binary.LittleEndian.Uint16(h[0:]), binary.LittleEndian.Uint16(h[2:])
	if major != FormatMajor || minor > FormatMinor {
		return nil, 0, descError(int64(len(DescriptorMagic)), "envelope header",
			fmt.Sprintf("format version %d.%d: this build reads %d.0 to %d.%d", major, minor, FormatMajor, FormatMajor, FormatMinor), ErrUnsupportedVersion)
	}
	bodyLen, payloadLen := binary.LittleEndian.Uint64(h[4:]), uint64(binary.LittleEndian.Uint32(h[12:]))
	if bodyLen > lim.descriptor || payloadLen > lim.descriptor {
		return nil, 0, descError(int64(len(DescriptorMagic))+4, "envelope header",
			fmt.Sprintf("body of %d bytes compressed to %d, over the %d-byte limit", bodyLen, payloadLen, lim.descriptor), nil)
	}
	rest, err := readGrowing(r, payloadLen+envelopeCRCSize)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, 0, descError(int64(envelopeHeaderSize+len(rest)), "envelope",
				fmt.Sprintf("the descriptor ends after %d bytes; its header says %d", envelopeHeaderSize+len(rest), uint64(envelopeHeaderSize)+payloadLen+envelopeCRCSize), ErrTruncated)
		}
		return nil, 0, fmt.Errorf("saveimage: reading the descriptor: %w", err)
	}
	size := int64(envelopeHeaderSize) + int64(len(rest))
	var one [1]byte
	if n, err := r.Read(one[:]); n > 0 {
		return nil, 0, descError(size, "envelope", "data after the end of the descriptor", nil)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("saveimage: reading the descriptor: %w", err)
	}
	payload := rest[:payloadLen]
	crc := crc64.Update(crc64.Checksum(hdr[:], crcTable), crcTable, payload)
	if want := binary.LittleEndian.Uint64(rest[payloadLen:]); crc != want {
		return nil, 0, descError(size-envelopeCRCSize, "envelope",
			fmt.Sprintf("checksum mismatch (computed %016x, stored %016x): the descriptor is corrupt", crc, want), nil)
	}
	return &bodyReader{r: bufio.NewReader(flate.NewReader(bytes.NewReader(payload))), limit: bodyLen}, size, nil
}

// bodyReader reads a descriptor body, counting what it consumes against
// the length the envelope declared.
type bodyReader struct {
	r     *bufio.Reader
	n     uint64
	limit uint64
}

func (b *bodyReader) err(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return bodyError(int64(b.n), what, "the body ends early", ErrTruncated)
	}
	return bodyError(int64(b.n), what, "bad body: "+err.Error(), nil)
}

func (b *bodyReader) ReadByte() (byte, error) {
	if b.n >= b.limit {
		return 0, io.ErrUnexpectedEOF
	}
	c, err := b.r.ReadByte()
	if err == nil {
		b.n++
	}
	return c, err
}

func (b *bodyReader) uvarint(what string) (uint64, error) {
	v, err := binary.ReadUvarint(b)
	if err != nil {
		return 0, b.err(what, err)
	}
	return v, nil
}

func (b *bodyReader) varint(what string) (int64, error) {
	v, err := binary.ReadVarint(b)
	if err != nil {
		return 0, b.err(what, err)
	}
	return v, nil
}

// u32 reads a uvarint that must fit in 32 bits.
func (b *bodyReader) u32(what string) (uint32, error) {
	v, err := b.uvarint(what)
	if err == nil && v > 1<<32-1 {
		err = bodyError(int64(b.n), what, fmt.Sprintf("%d does not fit in 32 bits", v), nil)
	}
	return uint32(v), err
}

// bytes reads exactly n bytes, allocating as they arrive.
func (b *bodyReader) bytes(what string, n uint64) ([]byte, error) {
	if n > b.limit-b.n {
		return nil, bodyError(int64(b.n), what, fmt.Sprintf("%d bytes, past the end of the %d-byte body", n, b.limit), nil)
	}
	p, err := readGrowing(b.r, n)
	b.n += uint64(len(p))
	if err != nil {
		return nil, b.err(what, err)
	}
	return p, nil
}

// copyTo copies n bytes to w (which may be nil: skip them).
func (b *bodyReader) copyTo(w io.Writer, what string, n uint64) error {
	if n > b.limit-b.n {
		return bodyError(int64(b.n), what, fmt.Sprintf("%d bytes, past the end of the %d-byte body", n, b.limit), nil)
	}
	if w == nil {
		w = io.Discard
	}
	got, err := io.CopyN(w, b.r, int64(n))
	b.n += uint64(got)
	if err != nil {
		var we *writeError
		if errors.As(err, &we) {
			return we.err
		}
		return b.err(what, err)
	}
	return nil
}

// end checks that the body ends here, exactly where the envelope said.
func (b *bodyReader) end() error {
	if b.n != b.limit {
		return bodyError(int64(b.n), "body", fmt.Sprintf("the ops end at byte %d of a %d-byte body", b.n, b.limit), nil)
	}
	if _, err := b.r.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			return bodyError(int64(b.n), "body", "the compressed body holds more than the envelope's length", nil)
		}
		return b.err("body", err)
	}
	return nil
}

// readSummary reads a body's summary and zero bitmap and checks that they
// agree with each other and with lim.
func readSummary(b *bodyReader, lim *limits) (*summary, []byte, error) {
	var s summary
	var err error
	u32 := func(p *uint32, what string) {
		if err == nil {
			*p, err = b.u32(what)
		}
	}
	u64 := func(p *uint64, what string) {
		if err == nil {
			*p, err = b.uvarint(what)
		}
	}
	var guest uint32
	u32(&guest, "summary: guest type")
	u32(&s.xenMajor, "summary: xen major")
	u32(&s.xenMinor, "summary: xen minor")
	u32(&s.libxcVersion, "summary: libxc version")
	u64(&s.imageBytes, "summary: image bytes")
	if err == nil {
		var crc [4]byte
		for i := range crc {
			if crc[i], err = b.ReadByte(); err != nil {
				err = b.err("summary: image checksum", err)
				break
			}
		}
		s.imageCRC = binary.LittleEndian.Uint32(crc[:])
	}
	u64(&s.pfns, "summary: pfn entries")
	u64(&s.pages, "summary: pages")
	u64(&s.zeroPages, "summary: zero pages")
	u64(&s.pageRecords, "summary: PAGE_DATA records")
	u64(&s.memPFNs, "summary: memory pfns")
	if err != nil {
		return nil, nil, err
	}
	s.guest = GuestType(guest)
	bad := func(msg string) (*summary, []byte, error) {
		return nil, nil, bodyError(int64(b.n), "summary", msg, nil)
	}
	switch {
	case s.guest != GuestPV && s.guest != GuestHVM:
		return bad(fmt.Sprintf("unknown %v", s.guest))
	case s.memPFNs > lim.pfns:
		return bad(fmt.Sprintf("%d memory pfns, over the %d limit", s.memPFNs, lim.pfns))
	case s.pfns > s.memPFNs || s.pages > s.pfns || s.zeroPages > s.pages || (s.pfns == 0) != (s.memPFNs == 0):
		return bad(fmt.Sprintf("inconsistent counts: %d pfn entries, %d pages, %d zero pages, %d memory pfns", s.pfns, s.pages, s.zeroPages, s.memPFNs))
	case s.pageRecords > s.pfns:
		return bad(fmt.Sprintf("%d PAGE_DATA records for %d pfn entries", s.pageRecords, s.pfns))
	}
	zero, err := b.bytes("summary: zero bitmap", bitmapBytes(s.memPFNs))
	if err != nil {
		return nil, nil, err
	}
	if r := s.memPFNs % 8; r != 0 && zero[len(zero)-1]>>r != 0 {
		return bad("zero bitmap has bits set past the last pfn")
	}
	return &s, zero, nil
}

// writeError marks an error from the destination of Join, so that it is
// not mistaken for a problem with the descriptor.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
