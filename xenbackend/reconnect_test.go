package xenbackend

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/snowflock/snowflock/internal/xenstore"
)

// TestReconnect: when xenstored closes the backend's connection, the
// backend connects again and watches domain ends again, and its lookups
// use the new connection. The other end is a minimal xenstored on a unix
// socket ($XENSTORED_PATH): the real one in the test bed cannot be made
// to drop a client on demand. It answers every request with OK.
func TestReconnect(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "xenstored.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv(xenstore.EnvPath, sock)
	watched := make(chan net.Conn, 4) // connections that watched @releaseDomain
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveOK(c, watched)
		}
	}()
	b, err := New(Config{XL: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	first := waitConn(t, watched)
	old := b.store()
	first.Close() // xenstored drops the backend
	second := waitConn(t, watched)
	defer second.Close()
	deadline := time.Now().Add(5 * time.Second)
	for b.store() == old {
		if time.Now().After(deadline) {
			t.Fatal("the backend did not switch to the new connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if old.Err() == nil || b.store().Err() != nil {
		t.Fatalf("old connection %v, new %v: want the old down and the new up", old.Err(), b.store().Err())
	}
}

func waitConn(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection watched @releaseDomain within 10 s")
		return nil
	}
}

// serveOK answers each request on c with an OK reply of its type,
// reporting c on watched once it watches @releaseDomain.
func serveOK(c net.Conn, watched chan<- net.Conn) {
	for {
		var h [16]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		body := make([]byte, binary.LittleEndian.Uint32(h[12:]))
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		typ := binary.LittleEndian.Uint32(h[0:])
		reply := append([]byte{}, h[:]...)
		binary.LittleEndian.PutUint32(reply[12:], 3)
		if _, err := c.Write(append(reply, 'O', 'K', 0)); err != nil {
			return
		}
		if xenstore.MsgType(typ) == xenstore.XS_WATCH && bytes.HasPrefix(body, []byte(xenstore.ReleaseDomain+"\x00")) {
			watched <- c
		}
	}
}
