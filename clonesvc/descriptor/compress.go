package descriptor

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
)

// The device state and the zero-page bitmaps are stored as raw DEFLATE
// (RFC 1951) streams: the q35 firmware ROM in the device state and the long
// runs in a bitmap compress well, and compress/flate needs no dependency.
// The level only changes the writer: any valid stream reads back.
const flateLevel = flate.DefaultCompression

// deflate compresses b.
func deflate(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flateLevel)
	if err != nil {
		return nil, fmt.Errorf("compressing: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("compressing: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compressing: %w", err)
	}
	return buf.Bytes(), nil
}

// inflate decompresses c, which must hold exactly one DEFLATE stream of
// exactly n bytes. It allocates in step with the output it actually gets,
// never n up front, so a forged n costs nothing.
func inflate(c []byte, n uint64) ([]byte, error) {
	src := bytes.NewReader(c) // an io.ByteReader: flate reads no further than its stream
	r := flate.NewReader(src)
	defer r.Close()
	var out bytes.Buffer
	got, err := io.Copy(&out, io.LimitReader(r, int64(n)+1))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("compressed data is truncated")
		}
		return nil, fmt.Errorf("bad compressed data: %w", err)
	}
	if uint64(got) != n {
		return nil, fmt.Errorf("compressed data holds %s bytes, want %d", countString(got, n), n)
	}
	if src.Len() != 0 {
		return nil, fmt.Errorf("%d bytes after the end of the compressed data", src.Len())
	}
	if n == 0 {
		return nil, nil
	}
	return out.Bytes(), nil
}

// countString says how many bytes came out: "more than n" when the limit cut
// the copy short.
func countString(got int64, n uint64) string {
	if uint64(got) > n {
		return fmt.Sprintf("more than %d", n)
	}
	return fmt.Sprint(got)
}
