package saveimage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// Info describes a split image. Split returns it; Inspect reads it back
// from a descriptor.
type Info struct {
	Guest         GuestType // from the libxc domain header
	XenMajor      uint32    // the Xen version that saved the image
	XenMinor      uint32
	StreamVersion uint32 // libxc image header version (3 for Xen 4.17)

	PFNs        uint64 // pfn entries in all PAGE_DATA records
	Pages       uint64 // of them, pages whose contents the stream carries
	ZeroPages   uint64 // of Pages, those all zeros: holes in the memory image
	PageRecords uint64 // PAGE_DATA records

	// MaxPFN is the highest pfn any PAGE_DATA record lists (with data or
	// not); it and MemorySize are 0 when none lists any. MemorySize is
	// (MaxPFN+1)*4096, the size of the memory image.
	MaxPFN     uint64
	MemorySize int64
	// Zero has one bit per pfn from 0 to MaxPFN: bit i%8 of byte i/8 is
	// set when pfn i was all zeros or had no contents in the stream (no
	// data type, or not listed at all). Its clear bits are exactly the
	// pages the memory image holds.
	Zero []byte

	DescriptorBytes int64  // size of the descriptor
	ImageBytes      int64  // size of the original image
	ImageCRC        uint32 // CRC-32C (Castagnoli) of the original image
}

// IsZero reports whether pfn reads as zeros in the memory image.
func (i *Info) IsZero(pfn uint64) bool {
	return pfn/8 >= uint64(len(i.Zero)) || i.Zero[pfn/8]&(1<<(pfn%8)) != 0
}

func (i *Info) String() string {
	return fmt.Sprintf("%v image from Xen %d.%d: %d bytes, %d pages of data (%d zero) over %d pfns, descriptor %d bytes",
		i.Guest, i.XenMajor, i.XenMinor, i.ImageBytes, i.Pages, i.ZeroPages, i.MemorySize/pageSize, i.DescriptorBytes)
}

func (s *summary) info(zero []byte, descBytes int64) *Info {
	if len(zero) == 0 {
		zero = nil // the same from Split and Inspect
	}
	i := &Info{
		Guest: s.guest, XenMajor: s.xenMajor, XenMinor: s.xenMinor, StreamVersion: s.libxcVersion,
		PFNs: s.pfns, Pages: s.pages, ZeroPages: s.zeroPages, PageRecords: s.pageRecords,
		Zero: zero, DescriptorBytes: descBytes, ImageBytes: int64(s.imageBytes), ImageCRC: s.imageCRC,
	}
	if s.memPFNs > 0 {
		i.MaxPFN = s.memPFNs - 1
		i.MemorySize = int64(s.memPFNs) * pageSize
	}
	return i
}

// Split reads an `xl save` image from r to its end, writes its descriptor
// to desc and its page contents to mem at pfn*4096, and describes it. It
// reads r strictly in order, so r may be a pipe or FIFO that xl save is
// writing, and validates everything as it goes: a malformed image fails
// with a *FormatError naming the offset and the record (wrapping
// errdefs.ErrInvalidArgument, and ErrTruncated or ErrUnsupported where they
// apply). It checks ctx between records.
//
// Split writes only non-zero pages, so mem must read as zeros wherever it
// is not written. When mem has a Truncate(int64) error method, as *os.File
// does, Split truncates it to 0 first and to Info.MemorySize at the end, so
// that zero pages are holes and the file is exactly the memory image.
// Nothing is written to desc unless the whole image is valid; mem may have
// been written to when Split fails. Split returns once r reports EOF (when
// xl save closes the file): data after the libxl END record is an error. A
// read that blocks does not see ctx; close r to abandon it.
func Split(ctx context.Context, r io.Reader, desc io.Writer, mem io.WriterAt) (*Info, error) {
	return split(ctx, r, desc, mem, &defaultLimits)
}

type truncater interface{ Truncate(int64) error }

// growSpan returns buf with room for n pages (n <= maxSpan), doubling.
func growSpan(buf []byte, n int) []byte {
	if len(buf) >= n*pageSize {
		return buf
	}
	nb := make([]byte, min(max(2*len(buf), n*pageSize), maxSpan*pageSize))
	copy(nb, buf)
	return nb
}

// maxSpan is how many consecutive pages Split and Join move with one
// WriteAt or ReadAt.
const maxSpan = 32

func split(ctx context.Context, r io.Reader, desc io.Writer, mem io.WriterAt, lim *limits) (*Info, error) {
	s := &splitter{
		ctx: ctx,
		in:  input{r: bufio.NewReaderSize(r, lim.ioBuf)},
		mem: mem,
		lim: lim,
		enc: opEncoder{limit: lim.descriptor},
	}
	if t, ok := mem.(truncater); ok {
		if err := t.Truncate(0); err != nil {
			return nil, fmt.Errorf("saveimage: emptying the memory image: %w", err)
		}
	}
	if err := s.image(); err != nil {
		return nil, err
	}
	if err := s.flushSpan(); err != nil {
		return nil, err
	}
	s.enc.end()

	sum := s.sum
	sum.imageBytes = uint64(s.in.off)
	sum.imageCRC = s.in.crc
	zero := s.nonzero.b[:min(uint64(len(s.nonzero.b)), bitmapBytes(sum.memPFNs))]
	zero = append(zero, make([]byte, bitmapBytes(sum.memPFNs)-uint64(len(zero)))...)
	for i := range zero {
		zero[i] = ^zero[i]
	}
	if rem := sum.memPFNs % 8; rem != 0 {
		zero[len(zero)-1] &= 1<<rem - 1
	}
	body := sum.append(make([]byte, 0, 64+len(zero)+len(s.enc.ops)))
	body = append(body, zero...)
	body = append(body, s.enc.ops...)
	if uint64(len(body)) > lim.descriptor {
		return nil, fmt.Errorf("saveimage: the descriptor would be %d bytes, over the %d-byte limit", len(body), lim.descriptor)
	}
	sealed, err := seal(body)
	if err != nil {
		return nil, err
	}
	if _, err := desc.Write(sealed); err != nil {
		return nil, fmt.Errorf("saveimage: writing the descriptor: %w", err)
	}
	if t, ok := mem.(truncater); ok {
		if err := t.Truncate(int64(sum.memPFNs) * pageSize); err != nil {
			return nil, fmt.Errorf("saveimage: sizing the memory image: %w", err)
		}
	}
	return sum.info(zero, int64(len(sealed))), nil
}

// input reads the image in order, counting and checksumming what it reads.
type input struct {
	r   *bufio.Reader
	off int64
	crc uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type splitter struct {
	ctx context.Context
	in  input
	mem io.WriterAt
	lim *limits
	enc opEncoder
	sum summary

	seen, nonzero bitset
	staticDataEnd bool
	entries       []uint64
	raw           []byte
	span          struct {
		buf   []byte
		start uint64 // first pfn
		n     int    // pages in buf
	}
}

func (s *splitter) fail(off int64, what, msg string, class error) error {
	return &FormatError{In: "image", Offset: off, What: what, Msg: msg, class: class}
}

// read reads exactly len(p) bytes of what.
func (s *splitter) read(p []byte, what string) error {
	n, err := io.ReadFull(s.in.r, p)
	s.in.crc = crc32.Update(s.in.crc, castagnoli, p[:n])
	s.in.off += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return s.fail(s.in.off, what, fmt.Sprintf("the image ends %d bytes into a %d-byte read", n, len(p)), ErrTruncated)
		}
		return fmt.Errorf("saveimage: reading the image at offset %d (%s): %w", s.in.off, what, err)
	}
	return nil
}

// keep reads len(p) bytes of what into p and into the descriptor.
func (s *splitter) keep(p []byte, what string) error {
	if err := s.read(p, what); err != nil {
		return err
	}
	if err := s.enc.literal(p); err != nil {
		return s.fail(s.in.off, what, err.Error(), nil)
	}
	return nil
}

// keepN reads n bytes of what straight into the descriptor's literal
// bytes, in pieces, so that memory grows only with the bytes that arrive.
func (s *splitter) keepN(n uint64, what string) error {
	for n > 0 {
		c := min(n, 64<<10)
		if s.enc.size()+c > s.enc.limit {
			return s.fail(s.in.off, what, s.enc.errFull().Error(), nil)
		}
		l := len(s.enc.lit)
		s.enc.lit = slices.Grow(s.enc.lit, int(c))[:l+int(c)]
		if err := s.read(s.enc.lit[l:], what); err != nil {
			s.enc.lit = s.enc.lit[:l]
			return err
		}
		n -= c
	}
	return nil
}

func (s *splitter) checkCtx() error {
	if err := s.ctx.Err(); err != nil {
		return fmt.Errorf("saveimage: splitting at offset %d: %w", s.in.off, err)
	}
	return nil
}

func padding(length uint32) uint64 {
	return (recAlign - uint64(length)%recAlign) % recAlign
}

// image reads the whole save image: xl header, libxl stream (with the
// libxc stream inside), and its end.
func (s *splitter) image() error {
	if err := s.xlHeader(); err != nil {
		return err
	}
	if err := s.libxl(); err != nil {
		return err
	}
	s.enc.flushLiteral()
	switch _, err := s.in.r.ReadByte(); {
	case err == nil:
		return s.fail(s.in.off, "end of image", "data after the libxl END record", nil)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("saveimage: reading the image at offset %d: %w", s.in.off, err)
	}
	return nil
}

func (s *splitter) xlHeader() error {
	const what = "xl save-file header"
	var h [xlHeaderSize]byte
	if err := s.keep(h[:], what); err != nil {
		return err
	}
	if string(h[:32]) != xlMagic {
		return s.fail(0, what, fmt.Sprintf("bad magic %q: not an xl save file", h[:32]), nil)
	}
	le := binary.LittleEndian
	if bo := le.Uint32(h[32:]); bo != xlByteorder {
		if binary.BigEndian.Uint32(h[32:]) == xlByteorder {
			return s.fail(32, what, "big-endian save file: xl restore on x86 refuses it (wrong byte order)", ErrUnsupported)
		}
		return s.fail(32, what, fmt.Sprintf("bad byte-order marker %#08x", bo), nil)
	}
	mandatory, optLen := le.Uint32(h[36:]), le.Uint32(h[44:])
	if bad := mandatory &^ xlMandatoryFlagAll; bad != 0 {
		return s.fail(36, what, fmt.Sprintf("unknown mandatory flags %#x (xl would refuse the file)", bad), nil)
	}
	if mandatory&xlMandatoryFlagStreamV2 == 0 {
		return s.fail(36, what, "no STREAMv2 flag: a legacy (Xen 4.5 and older) stream", ErrUnsupported)
	}
	if optLen > MaxOptionalData {
		return s.fail(44, what, fmt.Sprintf("optional data of %d bytes, over the %d-byte limit", optLen, MaxOptionalData), nil)
	}
	if optLen == 0 {
		return nil
	}
	const optWhat = "xl optional data (domain configuration)"
	opt := make([]byte, optLen) // at most MaxOptionalData
	start := s.in.off
	if err := s.keep(opt, optWhat); err != nil {
		return err
	}
	if optLen < xlOptionalConfigLenBytes {
		return s.fail(start, optWhat, fmt.Sprintf("%d bytes, too short for the config length (xl says: Savefile truncated)", optLen), nil)
	}
	if n := le.Uint32(opt); uint64(n) > uint64(optLen-xlOptionalConfigLenBytes) {
		return s.fail(start, optWhat, fmt.Sprintf("config length %d, but only %d bytes follow (xl says: Savefile truncated)", n, optLen-xlOptionalConfigLenBytes), nil)
	}
	return nil
}

func (s *splitter) libxl() error {
	const what = "libxl stream header"
	var h [libxlHeaderSize]byte
	start := s.in.off
	if err := s.keep(h[:], what); err != nil {
		return err
	}
	be := binary.BigEndian
	if id := be.Uint64(h[0:]); id != libxlIdent {
		return s.fail(start, what, fmt.Sprintf("bad ident %#016x, want %#016x (\"LibxlFmt\")", id, uint64(libxlIdent)), nil)
	}
	if v := be.Uint32(h[8:]); v != libxlVersion {
		return s.fail(start+8, what, fmt.Sprintf("version %d; libxl reads only %d", v, libxlVersion), ErrUnsupported)
	}
	if be.Uint32(h[12:])&libxlOptBigEndian != 0 {
		return s.fail(start+12, what, "big-endian stream", ErrUnsupported)
	}
	seenLibxc := false
	for {
		if err := s.checkCtx(); err != nil {
			return err
		}
		start := s.in.off
		var rh [recHeaderSize]byte
		if err := s.keep(rh[:], "libxl record header"); err != nil {
			return err
		}
		typ, length := binary.LittleEndian.Uint32(rh[0:]), binary.LittleEndian.Uint32(rh[4:])
		what := recordName("libxl", typ)
		switch typ {
		case libxlRecEnd, libxlRecLibxcContext:
			if length != 0 {
				return s.fail(start+4, what, fmt.Sprintf("length %d; this record is empty", length), nil)
			}
			if typ == libxlRecEnd {
				if !seenLibxc {
					return s.fail(start, what, "the libxl stream ends without a LIBXC_CONTEXT record", nil)
				}
				return nil
			}
			if seenLibxc {
				return s.fail(start, what, "a second LIBXC_CONTEXT record", nil)
			}
			seenLibxc = true
			if err := s.libxc(); err != nil {
				return err
			}
		case libxlRecEmulatorXenstore, libxlRecEmulatorContext:
			switch {
			case !seenLibxc:
				return s.fail(start, what, "before the LIBXC_CONTEXT record (libxl writes it after)", nil)
			case s.sum.guest != GuestHVM:
				return s.fail(start, what, fmt.Sprintf("in an %v image (libxl restore refuses it)", s.sum.guest), nil)
			case length < libxlEmulatorHeaderSize:
				return s.fail(start+4, what, fmt.Sprintf("length %d, too short for the %d-byte emulator header", length, libxlEmulatorHeaderSize), nil)
			case length > MaxMetadataRecord:
				return s.fail(start+4, what, fmt.Sprintf("length %d, over the %d-byte limit", length, MaxMetadataRecord), nil)
			}
			if err := s.keepN(uint64(length)+padding(length), what); err != nil {
				return err
			}
		case libxlRecCheckpointEnd, libxlRecCheckpointState:
			return s.fail(start, what, "a checkpointed (Remus/COLO) stream; xl save -c writes a plain one", ErrUnsupported)
		default:
			return s.fail(start, what, "unknown record type (libxl restore refuses it)", nil)
		}
	}
}

func (s *splitter) libxc() error {
	start := s.in.off
	var ih [libxcImageHeaderSize]byte
	if err := s.keep(ih[:], "libxc image header"); err != nil {
		return err
	}
	be := binary.BigEndian
	switch {
	case be.Uint64(ih[0:]) != libxcMarker:
		return s.fail(start, "libxc image header", fmt.Sprintf("bad marker %#016x: a legacy or corrupt libxc stream", be.Uint64(ih[0:])), nil)
	case be.Uint32(ih[8:]) != libxcID:
		return s.fail(start+8, "libxc image header", fmt.Sprintf("bad id %#08x, want %#08x (\"XENF\")", be.Uint32(ih[8:]), libxcID), nil)
	}
	v := be.Uint32(ih[12:])
	if v < libxcVersionMin || v > libxcVersionMax {
		return s.fail(start+12, "libxc image header", fmt.Sprintf("version %d; libxc reads %d to %d", v, libxcVersionMin, libxcVersionMax), ErrUnsupported)
	}
	if be.Uint16(ih[16:])&libxcOptBigEndian != 0 {
		return s.fail(start+16, "libxc image header", "big-endian stream", ErrUnsupported)
	}
	s.sum.libxcVersion = v

	start = s.in.off
	var dh [libxcDomainHeaderSize]byte
	if err := s.keep(dh[:], "libxc domain header"); err != nil {
		return err
	}
	le := binary.LittleEndian
	s.sum.guest = GuestType(le.Uint32(dh[0:]))
	if s.sum.guest != GuestPV && s.sum.guest != GuestHVM {
		return s.fail(start, "libxc domain header", fmt.Sprintf("%v: only x86 PV and HVM images", s.sum.guest), ErrUnsupported)
	}
	if ps := le.Uint16(dh[4:]); ps != pageShift {
		return s.fail(start+4, "libxc domain header", fmt.Sprintf("page shift %d: only 4 KiB pages", ps), ErrUnsupported)
	}
	s.sum.xenMajor, s.sum.xenMinor = le.Uint32(dh[8:]), le.Uint32(dh[12:])

	for {
		if err := s.checkCtx(); err != nil {
			return err
		}
		start := s.in.off
		var rh [recHeaderSize]byte
		if err := s.read(rh[:], "libxc record header"); err != nil {
			return err
		}
		typ, length := le.Uint32(rh[0:]), le.Uint32(rh[4:])
		what := recordName("libxc", typ)
		if uint64(length)+padding(length) > MaxRecordLength {
			return s.fail(start+4, what, fmt.Sprintf("length %d, over libxc's REC_LENGTH_MAX (%d)", length, MaxRecordLength), nil)
		}
		if typ == libxcRecPageData {
			if err := s.pageData(start, length); err != nil {
				return err
			}
			continue
		}
		if err := s.enc.literal(rh[:]); err != nil {
			return s.fail(start, what, err.Error(), nil)
		}
		switch {
		case typ == libxcRecEnd:
			if length != 0 {
				return s.fail(start+4, what, fmt.Sprintf("length %d; END is empty", length), nil)
			}
			return nil
		case typ == libxcRecVerify || typ == libxcRecCheckpoint || typ == libxcRecCheckpointDirtyPFNList:
			return s.fail(start, what, "a live-migration debug or checkpointed (Remus/COLO) stream; xl save -c writes a plain one", ErrUnsupported)
		case typ == libxcRecStaticDataEnd:
			if s.staticDataEnd {
				return s.fail(start, what, "a second STATIC_DATA_END record (libxc refuses it)", nil)
			}
			s.staticDataEnd = true
		case typ > libxcRecTypeLastMandatory && typ&libxcRecTypeOptional == 0:
			return s.fail(start, what, "unknown mandatory record type (libxc restore refuses it)", nil)
		}
		if length > MaxMetadataRecord {
			return s.fail(start+4, what, fmt.Sprintf("length %d, over the %d-byte limit for records kept in the descriptor", length, MaxMetadataRecord), nil)
		}
		if err := s.keepN(uint64(length)+padding(length), what); err != nil {
			return err
		}
	}
}

// pageData handles one PAGE_DATA record, whose 8-byte header (at start)
// has been read.
func (s *splitter) pageData(start int64, length uint32) error {
	what := recordName("libxc", libxcRecPageData)
	if s.sum.libxcVersion >= 3 && !s.staticDataEnd {
		return s.fail(start, what, "before STATIC_DATA_END (libxc refuses it)", nil)
	}
	if length < pageDataHeaderSize {
		return s.fail(start+4, what, fmt.Sprintf("length %d, too short for the %d-byte header", length, pageDataHeaderSize), nil)
	}
	var h [pageDataHeaderSize]byte
	if err := s.read(h[:], what); err != nil {
		return err
	}
	count, reserved := binary.LittleEndian.Uint32(h[0:]), binary.LittleEndian.Uint32(h[4:])
	switch {
	case count == 0:
		return s.fail(start+8, what, "count 0; a PAGE_DATA record lists at least one pfn", nil)
	case count > MaxPFNsPerRecord:
		return s.fail(start+8, what, fmt.Sprintf("count %d, over the %d limit (libxc writes at most 1024)", count, MaxPFNsPerRecord), nil)
	case uint64(length) < pageDataHeaderSize+8*uint64(count):
		return s.fail(start+4, what, fmt.Sprintf("length %d, too short for %d pfns", length, count), nil)
	}
	if cap(s.entries) < int(count) {
		s.entries = make([]uint64, count) // at most MaxPFNsPerRecord
	}
	entries := s.entries[:count]
	if cap(s.raw) < 8*int(count) {
		s.raw = make([]byte, 8*int(count))
	}
	raw := s.raw[:8*int(count)]
	entriesAt := s.in.off
	if err := s.read(raw, what+" pfn array"); err != nil {
		return err
	}
	data := uint64(0)
	for i := range entries {
		e := binary.LittleEndian.Uint64(raw[8*i:])
		entries[i] = e
		typ, pfn := e>>pageDataTypeShift, e&pageDataPFNMask
		at := entriesAt + 8*int64(i)
		switch {
		case !knownPageType(typ):
			return s.fail(at, what, fmt.Sprintf("pfn %#x (index %d) has unknown page type %#x", pfn, i, typ), nil)
		case pfn >= s.lim.pfns:
			return s.fail(at, what, fmt.Sprintf("pfn %#x (index %d) is not below the %#x limit", pfn, i, s.lim.pfns), nil)
		case s.seen.has(pfn):
			return s.fail(at, what, fmt.Sprintf("pfn %#x (index %d) appears a second time: only a live or checkpointed stream resends pages", pfn, i), ErrUnsupported)
		}
		s.seen.grow(pfn, s.lim.pfns)
		s.seen.set(pfn)
		s.sum.memPFNs = max(s.sum.memPFNs, pfn+1)
		if pageTypeHasData(typ) {
			data++
		}
	}
	if want := pageDataHeaderSize + 8*uint64(count) + pageSize*data; uint64(length) != want {
		return s.fail(start+4, what, fmt.Sprintf("length %d; %d pfns of which %d carry data make %d", length, count, data, want), nil)
	}
	if err := s.enc.pages(reserved, entries); err != nil {
		return s.fail(start, what, err.Error(), nil)
	}
	s.sum.pfns += uint64(count)
	s.sum.pages += data
	s.sum.pageRecords++
	for _, e := range entries {
		if !pageTypeHasData(e >> pageDataTypeShift) {
			continue
		}
		if err := s.page(e&pageDataPFNMask, what); err != nil {
			return err
		}
	}
	return nil
}

var zeroPage [pageSize]byte

// page reads one page of pfn's contents and, unless it is all zeros,
// queues it for the memory image.
func (s *splitter) page(pfn uint64, what string) error {
	if s.span.n > 0 && (pfn != s.span.start+uint64(s.span.n) || s.span.n == maxSpan) {
		if err := s.flushSpan(); err != nil {
			return err
		}
	}
	s.span.buf = growSpan(s.span.buf, s.span.n+1)
	p := s.span.buf[s.span.n*pageSize : (s.span.n+1)*pageSize]
	if err := s.read(p, what); err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			fe.Msg += fmt.Sprintf(", in the page of pfn %#x", pfn)
		}
		return err
	}
	if bytes.Equal(p, zeroPage[:]) {
		s.sum.zeroPages++
		return nil
	}
	if s.span.n == 0 {
		s.span.start = pfn
	}
	s.span.n++
	s.nonzero.grow(pfn, s.lim.pfns)
	s.nonzero.set(pfn)
	return nil
}

func (s *splitter) flushSpan() error {
	if s.span.n == 0 {
		return nil
	}
	off := int64(s.span.start) * pageSize
	if _, err := s.mem.WriteAt(s.span.buf[:s.span.n*pageSize], off); err != nil {
		return fmt.Errorf("saveimage: writing pfns %#x-%#x to the memory image: %w", s.span.start, s.span.start+uint64(s.span.n)-1, err)
	}
	s.span.n = 0
	return nil
}
