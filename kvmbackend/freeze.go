package kvmbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// pageSize is the granularity of the zero-page bitmap.
const pageSize = 4096

// freezeChunk is how much one worker reads at a time.
const freezeChunk = 4 << 20

// freezeWorkers copy chunks in parallel (reads of the page cache and
// writes of the new file overlap).
const freezeWorkers = 2

// freezeStats describes one memory freeze.
type freezeStats struct {
	Size      int64         // bytes of guest RAM
	Data      int64         // bytes inside data extents (read)
	Written   int64         // bytes of non-zero pages (written)
	ZeroPages int           // pages left as holes (zero bitmap bits set)
	Took      time.Duration // whole copy
}

// freezeMemory copies the guest RAM file src into a new file dst of the
// same size, reading only src's data extents (SEEK_DATA/SEEK_HOLE) and
// writing only pages that are not all zero (the rest stay holes). zero has
// one bit per page (bit i%8 of byte i/8), set when the page is all zero.
func freezeMemory(ctx context.Context, src, dst string, size int64) (zero []byte, st freezeStats, err error) {
	return freeze(ctx, src, dst, size, false)
}

// refreezeMemory brings dst, an earlier freezeMemory copy of src taken
// while the guest ran, up to date with src: it reads both and rewrites
// only the pages that differ (punching holes where a page became zero).
// Called with the guest paused, it costs reads of the touched memory and
// writes of what changed since the first copy, not a whole copy. The zero
// bitmap is that of src now.
func refreezeMemory(ctx context.Context, src, dst string, size int64) (zero []byte, st freezeStats, err error) {
	return freeze(ctx, src, dst, size, true)
}

func freeze(ctx context.Context, src, dst string, size int64, update bool) (zero []byte, st freezeStats, err error) {
	t0 := time.Now()
	st.Size = size
	in, err := os.Open(src)
	if err != nil {
		return nil, st, fmt.Errorf("freeze memory: %w", err)
	}
	defer in.Close()
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if update {
		flags = os.O_RDWR
	}
	out, err := os.OpenFile(dst, flags, 0o644)
	if err != nil {
		return nil, st, fmt.Errorf("freeze memory: %w", err)
	}
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("freeze memory: close %s: %w", dst, cerr)
		}
		if err != nil && !update {
			os.Remove(dst)
		}
	}()
	if err := out.Truncate(size); err != nil {
		return nil, st, fmt.Errorf("freeze memory: size %s: %w", dst, err)
	}

	pages := (size + pageSize - 1) / pageSize
	zero = bytes.Repeat([]byte{0xff}, int((pages+7)/8))
	if pages%8 != 0 {
		zero[len(zero)-1] = byte(1<<(pages%8)) - 1
	}

	chunks, err := dataChunks(in, size)
	if err != nil {
		return nil, st, fmt.Errorf("freeze memory: %s: %w", src, err)
	}
	var (
		mu   sync.Mutex // guards zero, st and firstErr
		next = make(chan [2]int64)
		wg   sync.WaitGroup
	)
	var firstErr error
	for range freezeWorkers {
		wg.Go(func() {
			buf := make([]byte, freezeChunk)
			var old []byte
			if update {
				old = make([]byte, freezeChunk)
			}
			for c := range next {
				w, z, cerr := freezeChunkCopy(in, out, buf, old, c[0], c[1])
				mu.Lock()
				if cerr != nil && firstErr == nil {
					firstErr = cerr
				}
				st.Data += c[1] - c[0]
				st.Written += w
				for _, p := range z {
					// z lists non-zero pages: clear their bits.
					zero[p/8] &^= 1 << (p % 8)
				}
				mu.Unlock()
			}
		})
	}
feed:
	for _, c := range chunks {
		select {
		case next <- c:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return nil, st, fmt.Errorf("freeze memory %s: %w", src, firstErr)
	}
	for _, b := range zero {
		st.ZeroPages += bitCount(b)
	}
	st.Took = time.Since(t0)
	return zero, st, nil
}

func bitCount(b byte) int {
	n := 0
	for ; b != 0; b &= b - 1 {
		n++
	}
	return n
}

// dataChunks lists f's data extents below size, cut at freezeChunk
// boundaries and aligned to pages.
func dataChunks(f *os.File, size int64) ([][2]int64, error) {
	var chunks [][2]int64
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at %d: %w", data, err)
		}
		start := data &^ (pageSize - 1)
		end := min((hole+pageSize-1)&^(pageSize-1), size)
		for s := start; s < end; {
			e := min((s/freezeChunk+1)*freezeChunk, end)
			chunks = append(chunks, [2]int64{s, e})
			s = e
		}
		off = max(end, hole)
	}
	return chunks, nil
}

var zeroPage = make([]byte, pageSize)

// freezeChunkCopy copies [start, end) of in to out, page by page, skipping
// all-zero pages. With old (a buffer for out's current contents), it
// updates an earlier copy instead: pages equal to out's are not written,
// and pages that became zero are punched out of out. It returns the bytes
// written and the indices of the non-zero pages.
func freezeChunkCopy(in, out *os.File, buf, old []byte, start, end int64) (written int64, nonZero []int64, err error) {
	buf = buf[:end-start]
	n, err := in.ReadAt(buf, start)
	if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return 0, nil, fmt.Errorf("read at %d: %w", start, err)
	}
	buf = buf[:n] // a file shorter than size: the rest is zero
	if old != nil {
		old = old[:n]
		if m, err := out.ReadAt(old, start); err != nil && !(errors.Is(err, io.EOF) && m > 0) {
			return 0, nil, fmt.Errorf("read copy at %d: %w", start, err)
		}
	}
	// Write runs of consecutive non-zero pages with one call each.
	runStart := -1
	flush := func(i int) error {
		if runStart < 0 {
			return nil
		}
		at := start + int64(runStart)
		w, err := out.WriteAt(buf[runStart:i], at)
		written += int64(w)
		runStart = -1
		if err != nil {
			return fmt.Errorf("write at %d: %w", at, err)
		}
		return nil
	}
	for i := 0; i < len(buf); i += pageSize {
		end := min(i+pageSize, len(buf))
		page := buf[i:end]
		isZero := bytes.Equal(page, zeroPage[:len(page)])
		if !isZero {
			nonZero = append(nonZero, (start+int64(i))/pageSize)
		}
		unchanged := old != nil && bytes.Equal(page, old[i:end])
		if isZero || unchanged {
			if err := flush(i); err != nil {
				return written, nonZero, err
			}
			if isZero && !unchanged && old != nil {
				// The page became zero since the first copy.
				if err := unix.Fallocate(int(out.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, start+int64(i), int64(len(page))); err != nil {
					return written, nonZero, fmt.Errorf("punch hole at %d: %w", start+int64(i), err)
				}
			}
			continue
		}
		if runStart < 0 {
			runStart = i
		}
	}
	return written, nonZero, flush(len(buf))
}
