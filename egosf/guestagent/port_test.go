package guestagent

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFindPort(t *testing.T) {
	sys := t.TempDir()
	for dev, name := range map[string]string{"vport0p0": "", "vport0p1": "org.qemu.guest_agent.0", "vport1p2": "org.snowflock.guest"} {
		os.MkdirAll(filepath.Join(sys, dev), 0o755)
		os.WriteFile(filepath.Join(sys, dev, "name"), []byte(name+"\n"), 0o644)
	}
	got, err := FindPort(sys, DefaultPortName)
	if err != nil || got != "/dev/vport1p2" {
		t.Errorf("FindPort = %q, %v; want /dev/vport1p2", got, err)
	}
	if _, err := FindPort(sys, "org.other"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing port: %v, want ErrNotExist", err)
	}
	if _, err := FindPort(filepath.Join(sys, "absent"), DefaultPortName); err == nil {
		t.Error("a missing sysfs directory is reported")
	}
}

// eofThenData returns EOF a few times, as a virtio-serial port does while
// its host side is not connected, then data.
type eofThenData struct {
	eofs int
	data []byte
}

func (e *eofThenData) Read(b []byte) (int, error) {
	if e.eofs > 0 {
		e.eofs--
		return 0, io.EOF
	}
	if len(e.data) == 0 {
		return 0, io.EOF
	}
	n := copy(b, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestEOFRetryReaderWaitsThroughEOF(t *testing.T) {
	src := &eofThenData{eofs: 3, data: []byte("frame")}
	r := &eofRetryReader{ctx: context.Background(), r: src, delay: time.Millisecond}
	b := make([]byte, 16)
	if n, err := r.Read(b); err != nil || string(b[:n]) != "frame" {
		t.Fatalf("Read = %q, %v; want the data after the EOFs", b[:n], err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r.ctx = ctx
	if _, err := r.Read(b); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Read with only EOF left: %v, want the context's end", err)
	}
}
