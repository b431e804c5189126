package saveimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
)

// Verify checks that an image survives the split: it splits image into a
// temporary directory (under $TMPDIR; it needs room for the non-zero
// pages), checks that Inspect reads the descriptor back to the same Info,
// joins the pieces and compares the result's SHA-256 and length with the
// image's. The temporary files are removed before it returns.
func Verify(ctx context.Context, image io.Reader) (*Info, error) {
	dir, err := os.MkdirTemp("", "saveimage-verify-*")
	if err != nil {
		return nil, fmt.Errorf("saveimage: verify: %w", err)
	}
	defer os.RemoveAll(dir)
	mem, err := os.Create(filepath.Join(dir, "memory"))
	if err != nil {
		return nil, fmt.Errorf("saveimage: verify: %w", err)
	}
	defer mem.Close()

	in := sha256.New()
	var desc bytes.Buffer
	info, err := Split(ctx, io.TeeReader(image, in), &desc, mem)
	if err != nil {
		return nil, err
	}
	again, err := Inspect(bytes.NewReader(desc.Bytes()))
	if err != nil {
		return info, fmt.Errorf("saveimage: verify: inspecting the descriptor: %w", err)
	}
	if !reflect.DeepEqual(again, info) {
		return info, fmt.Errorf("saveimage: verify: Inspect says %+v, Split said %+v", again, info)
	}
	out := sha256.New()
	n := &countWriter{w: out}
	if err := Join(ctx, bytes.NewReader(desc.Bytes()), mem, n); err != nil {
		return info, fmt.Errorf("saveimage: verify: %w", err)
	}
	if n.n != info.ImageBytes || !bytes.Equal(in.Sum(nil), out.Sum(nil)) {
		return info, fmt.Errorf("saveimage: verify: joined %d bytes (sha256 %x), the image has %d (sha256 %x): %w",
			n.n, out.Sum(nil), info.ImageBytes, in.Sum(nil), ErrMismatch)
	}
	return info, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
