package saveimage

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
)

// Join rebuilds the image a descriptor came from, reading page contents
// from mem at pfn*4096 (pages the descriptor marks zero are not read), and
// writes it to w strictly in order, so that w may be a pipe or FIFO that
// `xl restore` reads. It holds the descriptor (at most MaxDescriptorSize,
// usually kilobytes), two bitmaps of one bit per pfn (32 KiB per GiB of
// guest memory) and under 1 MiB of buffers, never the image. It checks ctx
// between records.
//
// The descriptor is checked whole (envelope, version, checksum) before the
// first byte is written. A bad descriptor fails with a *FormatError. What
// Join wrote is checked against the original image's length and CRC-32C at
// the end: a wrong or corrupt memory image fails with ErrMismatch, after
// the bytes went out, so a reader must not trust its input until Join
// returns nil.
func Join(ctx context.Context, desc io.Reader, mem io.ReaderAt, w io.Writer) error {
	return join(ctx, desc, mem, w, &defaultLimits)
}

// Inspect reads a descriptor, checks it through (it reads no memory image),
// and describes the image it came from. Its Info equals the one Split
// returned.
func Inspect(desc io.Reader) (*Info, error) {
	b, size, err := openDescriptor(desc, &defaultLimits)
	if err != nil {
		return nil, err
	}
	rp, err := newReplayer(context.Background(), b, &defaultLimits, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := rp.run(); err != nil {
		return nil, err
	}
	return rp.sum.info(rp.zero, size), nil
}

func join(ctx context.Context, desc io.Reader, mem io.ReaderAt, w io.Writer, lim *limits) error {
	b, _, err := openDescriptor(desc, lim)
	if err != nil {
		return err
	}
	out := &output{w: bufio.NewWriterSize(w, lim.ioBuf)}
	rp, err := newReplayer(ctx, b, lim, mem, out)
	if err != nil {
		return err
	}
	if err := rp.run(); err != nil {
		return err
	}
	if err := out.w.Flush(); err != nil {
		return fmt.Errorf("saveimage: writing the image: %w", err)
	}
	if out.n != rp.sum.imageBytes || out.crc != rp.sum.imageCRC {
		return &FormatError{In: "image", Offset: int64(out.n), What: "joined image",
			Msg: fmt.Sprintf("wrote %d bytes with CRC-32C %08x; the original had %d bytes with %08x: the memory image does not belong to this descriptor or is corrupt",
				out.n, out.crc, rp.sum.imageBytes, rp.sum.imageCRC), class: ErrMismatch}
	}
	return nil
}

// output is Join's destination, counted and checksummed.
type output struct {
	w   *bufio.Writer
	n   uint64
	crc uint32
}

func (o *output) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	o.crc = crc32.Update(o.crc, castagnoli, p[:n])
	o.n += uint64(n)
	if err != nil {
		return n, &writeError{fmt.Errorf("saveimage: writing the image: %w", err)}
	}
	return n, nil
}

// replayer walks a descriptor body's ops, checking them, and (for Join)
// writes the image they describe.
type replayer struct {
	ctx  context.Context
	b    *bodyReader
	lim  *limits
	sum  *summary
	zero []byte
	mem  io.ReaderAt
	out  *output // nil for Inspect

	seen     []byte // pfns listed so far, memPFNs bits
	hi, next uint64 // run state, as opEncoder's
	entries  []uint64
	scratch  []byte

	pfns, pages, zeroPages, records, nonzero uint64
	top                                      uint64 // highest pfn listed + 1
	bytes                                    uint64 // image bytes described so far

	span struct {
		buf   []byte
		start uint64
		n     int
	}
}

func newReplayer(ctx context.Context, b *bodyReader, lim *limits, mem io.ReaderAt, out *output) (*replayer, error) {
	sum, zero, err := readSummary(b, lim)
	if err != nil {
		return nil, err
	}
	rp := &replayer{ctx: ctx, b: b, lim: lim, sum: sum, zero: zero, mem: mem, out: out,
		seen: make([]byte, len(zero))} // len(zero) is bounded by lim.pfns/8
	return rp, nil
}

func (rp *replayer) fail(what, msg string) error {
	return bodyError(int64(rp.b.n), what, msg, nil)
}

func (rp *replayer) write(p []byte) error {
	if rp.out == nil {
		return nil
	}
	_, err := rp.out.Write(p)
	if err != nil {
		var we *writeError
		if errors.As(err, &we) {
			return we.err
		}
	}
	return err
}

// account adds n bytes to the image described so far.
func (rp *replayer) account(what string, n uint64) error {
	if n > rp.sum.imageBytes-rp.bytes {
		return rp.fail(what, fmt.Sprintf("describes more than the summary's %d image bytes", rp.sum.imageBytes))
	}
	rp.bytes += n
	return nil
}

func (rp *replayer) run() error {
	for {
		if err := rp.ctx.Err(); err != nil {
			return fmt.Errorf("saveimage: joining at image offset %d: %w", rp.bytes, err)
		}
		op, err := rp.b.ReadByte()
		if err != nil {
			return rp.b.err("op", err)
		}
		switch op {
		case opEnd:
			return rp.finish()
		case opLiteral:
			n, err := rp.b.uvarint("literal length")
			if err != nil {
				return err
			}
			if n == 0 {
				return rp.fail("literal", "empty literal")
			}
			if err := rp.account("literal", n); err != nil {
				return err
			}
			var w io.Writer
			if rp.out != nil {
				w = rp.out
			}
			if err := rp.b.copyTo(w, "literal", n); err != nil {
				return err
			}
		case opPages:
			if err := rp.pageRecord(); err != nil {
				return err
			}
		default:
			return rp.fail("op", fmt.Sprintf("unknown op %d", op))
		}
	}
}

func (rp *replayer) isZero(pfn uint64) bool { return rp.zero[pfn/8]&(1<<(pfn%8)) != 0 }

// pageRecord replays one opPages: a PAGE_DATA record.
func (rp *replayer) pageRecord() error {
	const what = "PAGE_DATA op"
	reserved, err := rp.b.u32(what + ": reserved")
	if err != nil {
		return err
	}
	count, err := rp.b.uvarint(what + ": count")
	if err != nil {
		return err
	}
	if count == 0 || count > MaxPFNsPerRecord {
		return rp.fail(what, fmt.Sprintf("count %d, not in 1..%d", count, MaxPFNsPerRecord))
	}
	entries := rp.entries[:0]
	data := uint64(0)
	for uint64(len(entries)) < count {
		tag, err := rp.b.uvarint(what + ": run")
		if err != nil {
			return err
		}
		run := tag>>1 + 1
		if run > count-uint64(len(entries)) {
			return rp.fail(what, fmt.Sprintf("a run of %d entries overruns the record's %d", run, count))
		}
		if tag&1 != 0 {
			if rp.hi, err = rp.b.uvarint(what + ": run type"); err != nil {
				return err
			}
			if rp.hi > 0xfff || !knownPageType(rp.hi>>8) {
				return rp.fail(what, fmt.Sprintf("bad entry high bits %#x", rp.hi))
			}
		}
		delta, err := rp.b.varint(what + ": run pfn")
		if err != nil {
			return err
		}
		// next <= memPFNs <= lim.pfns, far from overflow either way.
		if delta < -int64(rp.next) || delta > int64(rp.sum.memPFNs) {
			return rp.fail(what, fmt.Sprintf("run pfn %d%+d out of range", rp.next, delta))
		}
		pfn := uint64(int64(rp.next) + delta)
		if pfn+run > rp.sum.memPFNs {
			return rp.fail(what, fmt.Sprintf("run of pfns %#x-%#x past the summary's %d memory pfns", pfn, pfn+run-1, rp.sum.memPFNs))
		}
		hasData := pageTypeHasData(rp.hi >> 8)
		for p := pfn; p < pfn+run; p++ {
			if rp.seen[p/8]&(1<<(p%8)) != 0 {
				return rp.fail(what, fmt.Sprintf("pfn %#x listed twice", p))
			}
			rp.seen[p/8] |= 1 << (p % 8)
			if !hasData && !rp.isZero(p) {
				return rp.fail(what, fmt.Sprintf("pfn %#x has no data but the zero bitmap says it has", p))
			}
			entries = append(entries, rp.hi<<52|p)
		}
		if hasData {
			data += run
		}
		rp.top = max(rp.top, pfn+run)
		rp.next = pfn + run
	}
	rp.entries = entries
	length := pageDataHeaderSize + 8*count + pageSize*data
	if length > MaxRecordLength {
		return rp.fail(what, fmt.Sprintf("record length %d, over REC_LENGTH_MAX", length))
	}
	if err := rp.account(what, recHeaderSize+length); err != nil {
		return err
	}
	rp.pfns += count
	rp.pages += data
	rp.records++
	if rp.out == nil {
		for _, e := range entries {
			if pageTypeHasData(e>>pageDataTypeShift) && rp.isZero(e&pageDataPFNMask) {
				rp.zeroPages++
			} else if pageTypeHasData(e >> pageDataTypeShift) {
				rp.nonzero++
			}
		}
		return nil
	}

	hdr := rp.scratch[:0]
	hdr = binary.LittleEndian.AppendUint32(hdr, libxcRecPageData)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(length))
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(count))
	hdr = binary.LittleEndian.AppendUint32(hdr, reserved)
	for _, e := range entries {
		hdr = binary.LittleEndian.AppendUint64(hdr, e)
	}
	rp.scratch = hdr
	if err := rp.write(hdr); err != nil {
		return err
	}
	for _, e := range entries {
		if !pageTypeHasData(e >> pageDataTypeShift) {
			continue
		}
		pfn := e & pageDataPFNMask
		if rp.isZero(pfn) {
			rp.zeroPages++
			if err := rp.flushSpan(); err != nil {
				return err
			}
			if err := rp.write(zeroPage[:]); err != nil {
				return err
			}
			continue
		}
		rp.nonzero++
		if rp.span.n > 0 && (pfn != rp.span.start+uint64(rp.span.n) || rp.span.n == maxSpan) {
			if err := rp.flushSpan(); err != nil {
				return err
			}
		}
		if rp.span.n == 0 {
			rp.span.start = pfn
		}
		rp.span.n++
		rp.span.buf = growSpan(rp.span.buf, rp.span.n)
	}
	return rp.flushSpan()
}

// flushSpan reads the pending run of pages from the memory image and
// writes it out.
func (rp *replayer) flushSpan() error {
	if rp.span.n == 0 {
		return nil
	}
	p := rp.span.buf[:rp.span.n*pageSize]
	n, err := rp.mem.ReadAt(p, int64(rp.span.start)*pageSize)
	if n < len(p) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("saveimage: reading pfns %#x-%#x from the memory image: %w (%w)",
			rp.span.start, rp.span.start+uint64(rp.span.n)-1, err, ErrMismatch)
	}
	rp.span.n = 0
	return rp.write(p)
}

// finish checks that the ops described exactly what the summary says.
func (rp *replayer) finish() error {
	if err := rp.b.end(); err != nil {
		return err
	}
	s := rp.sum
	if rp.pfns != s.pfns || rp.pages != s.pages || rp.zeroPages != s.zeroPages || rp.records != s.pageRecords || rp.top != s.memPFNs || rp.bytes != s.imageBytes {
		return rp.fail("summary", fmt.Sprintf("the ops describe %d pfn entries, %d pages (%d zero), %d records, %d memory pfns, %d bytes; the summary says %d, %d (%d), %d, %d, %d",
			rp.pfns, rp.pages, rp.zeroPages, rp.records, rp.top, rp.bytes, s.pfns, s.pages, s.zeroPages, s.pageRecords, s.memPFNs, s.imageBytes))
	}
	clear := uint64(0)
	for i, z := range rp.zero {
		c := ^z
		if i == len(rp.zero)-1 && s.memPFNs%8 != 0 {
			c &= 1<<(s.memPFNs%8) - 1
		}
		clear += uint64(bits.OnesCount8(c))
	}
	if clear != rp.nonzero {
		return rp.fail("zero bitmap", fmt.Sprintf("%d pfns marked non-zero, but %d non-zero pages listed", clear, rp.nonzero))
	}
	return nil
}
