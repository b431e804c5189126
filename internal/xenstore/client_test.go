package xenstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// peer is a scripted xenstored on the other end of a net.Pipe: it checks
// the exact bytes of each request and answers with exact bytes, encoded
// here independently of the client's codec.
type peer struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func newPair(t *testing.T) (*Client, *peer) {
	t.Helper()
	a, b := net.Pipe()
	c := NewClient(a)
	t.Cleanup(func() { c.Close(); b.Close() })
	return c, &peer{t: t, conn: b, r: bufio.NewReader(b)}
}

// expect reads one request, checks its type, tx_id and payload, and
// returns its req_id.
func (p *peer) expect(typ MsgType, tx uint32, payload string) uint32 {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [16]byte
	if _, err := io.ReadFull(p.r, h[:]); err != nil {
		p.t.Fatalf("peer: reading a %s request: %v", typ, err)
	}
	gotType := binary.LittleEndian.Uint32(h[0:])
	id := binary.LittleEndian.Uint32(h[4:])
	gotTx := binary.LittleEndian.Uint32(h[8:])
	n := binary.LittleEndian.Uint32(h[12:])
	body := make([]byte, n)
	if _, err := io.ReadFull(p.r, body); err != nil {
		p.t.Fatalf("peer: reading the payload of a %s request: %v", typ, err)
	}
	if MsgType(gotType) != typ || gotTx != tx || string(body) != payload {
		p.t.Fatalf("peer: got type %d tx %d payload %q, want type %d (%s) tx %d payload %q",
			gotType, gotTx, body, typ, typ, tx, payload)
	}
	if id == 0 {
		p.t.Fatalf("peer: %s request with req_id 0", typ)
	}
	return id
}

// send writes one message.
func (p *peer) send(typ MsgType, reqID, tx uint32, payload string) {
	p.t.Helper()
	b := make([]byte, 16+len(payload))
	binary.LittleEndian.PutUint32(b[0:], uint32(typ))
	binary.LittleEndian.PutUint32(b[4:], reqID)
	binary.LittleEndian.PutUint32(b[8:], tx)
	binary.LittleEndian.PutUint32(b[12:], uint32(len(payload)))
	copy(b[16:], payload)
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatalf("peer: send %s: %v", typ, err)
	}
}

type result[T any] struct {
	v   T
	err error
}

// async runs f in a goroutine; its result arrives on the channel.
func async[T any](f func() (T, error)) chan result[T] {
	ch := make(chan result[T], 1)
	go func() {
		v, err := f()
		ch <- result[T]{v, err}
	}()
	return ch
}

func wait[T any](t *testing.T, ch chan result[T]) (T, error) {
	t.Helper()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-time.After(5 * time.Second):
		t.Fatal("call did not return")
		panic("unreachable")
	}
}

func TestSizes(t *testing.T) {
	if got := binary.Size(SockMsg{}); got != SizeOfSockMsg {
		t.Errorf("SockMsg is %d bytes on the wire, struct xsd_sockmsg is %d", got, SizeOfSockMsg)
	}
}

func TestWireBytesOfARead(t *testing.T) {
	a, b := net.Pipe()
	c := NewClient(a)
	defer c.Close()
	defer b.Close()
	res := async(func() ([]byte, error) { return c.Read(t.Context(), "/a") })
	got := make([]byte, 19)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	want := []byte{
		2, 0, 0, 0, // XS_READ
		1, 0, 0, 0, // req_id
		0, 0, 0, 0, // tx_id
		3, 0, 0, 0, // len
		'/', 'a', 0,
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("READ /a on the wire: % x, want % x", got, want)
	}
	// The reply to READ is the raw value: no NUL added or expected.
	b.Write([]byte{2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 'x', 0, 'y'})
	v, err := wait(t, res)
	if err != nil || string(v) != "x\x00y" {
		t.Fatalf("Read = %q, %v; want \"x\\x00y\"", v, err)
	}
}

func TestWriteMkdirRemove(t *testing.T) {
	c, p := newPair(t)
	ctx := t.Context()
	res := async(func() (struct{}, error) { return struct{}{}, c.Write(ctx, "/a/b", []byte("v\x00al")) })
	// The value follows the path's NUL and has none of its own.
	id := p.expect(XS_WRITE, 0, "/a/b\x00v\x00al")
	p.send(XS_WRITE, id, 0, "OK\x00")
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	res = async(func() (struct{}, error) { return struct{}{}, c.Mkdir(ctx, "data/x") })
	id = p.expect(XS_MKDIR, 0, "data/x\x00")
	p.send(XS_MKDIR, id, 0, "OK\x00")
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	res = async(func() (struct{}, error) { return struct{}{}, c.Remove(ctx, "/a") })
	id = p.expect(XS_RM, 0, "/a\x00")
	p.send(XS_RM, id, 0, "OK\x00")
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	res = async(func() (struct{}, error) { return struct{}{}, c.Write(ctx, "/empty", nil) })
	id = p.expect(XS_WRITE, 0, "/empty\x00")
	p.send(XS_WRITE, id, 0, "OK\x00")
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
}

func TestDirectory(t *testing.T) {
	c, p := newPair(t)
	for _, tc := range []struct {
		reply string
		want  []string
	}{
		{"b\x00a\x00c\x00", []string{"b", "a", "c"}},
		{"", nil},
	} {
		res := async(func() ([]string, error) { return c.Directory(t.Context(), "/d") })
		id := p.expect(XS_DIRECTORY, 0, "/d\x00")
		p.send(XS_DIRECTORY, id, 0, tc.reply)
		got, err := wait(t, res)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Directory with reply %q = %q, %v; want %q", tc.reply, got, err, tc.want)
		}
	}
}

func TestDirectoryTooLongUsesParts(t *testing.T) {
	c, p := newPair(t)
	res := async(func() ([]string, error) { return c.Directory(t.Context(), "/d") })
	id := p.expect(XS_DIRECTORY, 0, "/d\x00")
	p.send(XS_ERROR, id, 0, "E2BIG\x00")
	id = p.expect(XS_DIRECTORY_PART, 0, "/d\x000\x00")
	p.send(XS_DIRECTORY_PART, id, 0, "7\x00aa\x00b\x00")
	id = p.expect(XS_DIRECTORY_PART, 0, "/d\x005\x00")
	// The node changed (generation 8): the listing starts again.
	p.send(XS_DIRECTORY_PART, id, 0, "8\x00c\x00\x00")
	id = p.expect(XS_DIRECTORY_PART, 0, "/d\x000\x00")
	p.send(XS_DIRECTORY_PART, id, 0, "8\x00aa\x00b\x00")
	id = p.expect(XS_DIRECTORY_PART, 0, "/d\x005\x00")
	p.send(XS_DIRECTORY_PART, id, 0, "8\x00c\x00\x00")
	got, err := wait(t, res)
	if err != nil || !slices.Equal(got, []string{"aa", "b", "c"}) {
		t.Fatalf("Directory = %q, %v; want [aa b c]", got, err)
	}
}

func TestErrorReplies(t *testing.T) {
	c, p := newPair(t)
	for _, tc := range []struct {
		errno string
		class error
	}{
		{"ENOENT", fs.ErrNotExist},
		{"EACCES", fs.ErrPermission},
		{"EPERM", fs.ErrPermission},
		{"EEXIST", fs.ErrExist},
		{"EINVAL", fs.ErrInvalid},
		{"EAGAIN", ErrRetry},
		{"ENOSPC", ErrQuota},
		{"E2BIG", ErrTooLarge},
		{"ENOSYS", errors.ErrUnsupported},
		{"EQUUX", nil},
	} {
		res := async(func() ([]byte, error) { return c.Read(t.Context(), "/x") })
		id := p.expect(XS_READ, 0, "/x\x00")
		p.send(XS_ERROR, id, 0, tc.errno+"\x00")
		_, err := wait(t, res)
		var xe *Error
		if !errors.As(err, &xe) || *xe != (Error{Op: "READ", Path: "/x", Errno: tc.errno}) {
			t.Errorf("%s: error %#v, want *Error{READ /x %s}", tc.errno, err, tc.errno)
			continue
		}
		if tc.class != nil && !errors.Is(err, tc.class) {
			t.Errorf("%s: %v does not match %v", tc.errno, err, tc.class)
		}
		for _, other := range []error{fs.ErrNotExist, fs.ErrPermission, fs.ErrExist, ErrRetry, ErrClosed} {
			if other != tc.class && errors.Is(err, other) {
				t.Errorf("%s: %v matches %v too", tc.errno, err, other)
			}
		}
		if got := err.Error(); got != "xenstore READ /x: "+tc.errno {
			t.Errorf("message %q", got)
		}
	}
	// A garbled error reply fails that call, not the connection.
	res := async(func() ([]byte, error) { return c.Read(t.Context(), "/x") })
	id := p.expect(XS_READ, 0, "/x\x00")
	p.send(XS_ERROR, id, 0, "no such thing")
	if _, err := wait(t, res); !errors.Is(err, ErrProtocol) {
		t.Errorf("garbled error reply: %v, want ErrProtocol", err)
	}
	if c.Err() != nil {
		t.Errorf("connection down after a garbled error reply: %v", c.Err())
	}
}

func TestEventsBetweenRequestAndReply(t *testing.T) {
	c, p := newPair(t)
	ctx := t.Context()
	wres := async(func() (*Watch, error) { return c.Watch(ctx, "/local/domain/5/data", "tok1") })
	id := p.expect(XS_WATCH, 0, "/local/domain/5/data\x00tok1\x00")
	// Linux's xenbus device may queue the first event before the reply,
	// with an uninitialised req_id.
	p.send(XS_WATCH_EVENT, 0xdeadbeef, 0x1234, "/local/domain/5/data\x00tok1\x00")
	p.send(XS_WATCH, id, 0, "OK\x00")
	w, err := wait(t, wres)
	if err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w, "/local/domain/5/data")

	rres := async(func() ([]byte, error) { return c.Read(ctx, "/local/domain/5/data/x") })
	id = p.expect(XS_READ, 0, "/local/domain/5/data/x\x00")
	p.send(XS_WATCH_EVENT, 0, 0, "/local/domain/5/data/x\x00tok1\x00")
	p.send(XS_WATCH_EVENT, 0, 0, "/elsewhere\x00unknown-token\x00") // dropped
	p.send(XS_READ, id, 0, "v")
	v, err := wait(t, rres)
	if err != nil || string(v) != "v" {
		t.Fatalf("Read = %q, %v", v, err)
	}
	expectEvent(t, w, "/local/domain/5/data/x")
}

func expectEvent(t *testing.T, w *Watch, path string) {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok || ev != (Event{Path: path, Token: w.Token()}) {
			t.Fatalf("event %+v (open %v), want %s %s", ev, ok, path, w.Token())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no event for %s", path)
	}
}

func TestWatchesRoutedByToken(t *testing.T) {
	c, p := newPair(t)
	ctx := t.Context()
	watch := func(path, token string) *Watch {
		res := async(func() (*Watch, error) { return c.Watch(ctx, path, token) })
		id := p.expect(XS_WATCH, 0, path+"\x00"+token+"\x00")
		p.send(XS_WATCH, id, 0, "OK\x00")
		w, err := wait(t, res)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w1 := watch("data/a", "t1")
	w2 := watch(ReleaseDomain, "t2")
	if _, err := c.Watch(ctx, "data/b", "t1"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second watch with token t1: %v, want fs.ErrExist", err)
	}
	p.send(XS_WATCH_EVENT, 0, 0, "@releaseDomain\x00t2\x00")
	p.send(XS_WATCH_EVENT, 0, 0, "data/a/x\x00t1\x00")
	expectEvent(t, w1, "data/a/x")
	expectEvent(t, w2, "@releaseDomain")

	res := async(func() (struct{}, error) { return struct{}{}, w1.Close() })
	id := p.expect(XS_UNWATCH, 0, "data/a\x00t1\x00")
	p.send(XS_UNWATCH, id, 0, "OK\x00")
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w1.Events(); ok {
		t.Error("Events still open after Close")
	}
	if w1.Err() != nil {
		t.Errorf("Err after Close: %v", w1.Err())
	}
	// A late event of the old watch is dropped (a reply after it shows the
	// reader is past it); the token is free again.
	p.send(XS_WATCH_EVENT, 0, 0, "data/a\x00t1\x00")
	rres := async(func() ([]byte, error) { return c.Read(ctx, "/sync") })
	id = p.expect(XS_READ, 0, "/sync\x00")
	p.send(XS_READ, id, 0, "")
	if _, err := wait(t, rres); err != nil {
		t.Fatal(err)
	}
	w3 := watch("data/c", "t1")
	p.send(XS_WATCH_EVENT, 0, 0, "data/c\x00t1\x00")
	expectEvent(t, w3, "data/c")
}

func TestWatchQueueDropsOldest(t *testing.T) {
	c, p := newPair(t)
	res := async(func() (*Watch, error) { return c.Watch(t.Context(), "/a", "t") })
	id := p.expect(XS_WATCH, 0, "/a\x00t\x00")
	p.send(XS_WATCH, id, 0, "OK\x00")
	w, err := wait(t, res)
	if err != nil {
		t.Fatal(err)
	}
	for i := range watchQueue + 5 {
		p.send(XS_WATCH_EVENT, 0, 0, fmt.Sprintf("/a/%d\x00t\x00", i))
	}
	// A reply after the events: once it is back, all events were handled.
	rres := async(func() ([]byte, error) { return c.Read(t.Context(), "/a") })
	id = p.expect(XS_READ, 0, "/a\x00")
	p.send(XS_READ, id, 0, "")
	if _, err := wait(t, rres); err != nil {
		t.Fatal(err)
	}
	if w.Dropped() != 5 {
		t.Errorf("Dropped = %d, want 5", w.Dropped())
	}
	expectEvent(t, w, "/a/5") // the oldest five went
}

func TestPipelinedRepliesOutOfOrder(t *testing.T) {
	c, p := newPair(t)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/p/%d", i)
			v, err := c.Read(t.Context(), path)
			if err == nil && string(v) != path {
				err = fmt.Errorf("Read %s = %q", path, v)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	type req struct {
		id   uint32
		path string
	}
	var reqs []req
	ids := map[uint32]bool{}
	for range n {
		p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		h, payload, err := readMsg(p.r)
		if err != nil {
			t.Fatal(err)
		}
		if ids[h.ReqID] {
			t.Fatalf("req_id %d used twice", h.ReqID)
		}
		ids[h.ReqID] = true
		reqs = append(reqs, req{h.ReqID, trimNUL(payload)})
	}
	for _, r := range slices.Backward(reqs) {
		p.send(XS_READ, r.id, 0, r.path)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPeerClosesMidRequest(t *testing.T) {
	c, p := newPair(t)
	wres := async(func() (*Watch, error) { return c.Watch(t.Context(), "/w", "t") })
	id := p.expect(XS_WATCH, 0, "/w\x00t\x00")
	p.send(XS_WATCH, id, 0, "OK\x00")
	w, err := wait(t, wres)
	if err != nil {
		t.Fatal(err)
	}
	res := async(func() ([]byte, error) { return c.Read(t.Context(), "/x") })
	p.expect(XS_READ, 0, "/x\x00")
	p.conn.Close()
	if _, err := wait(t, res); !errors.Is(err, ErrClosed) {
		t.Fatalf("waiting Read: %v, want ErrClosed", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if _, ok := <-w.Events(); ok {
		t.Error("watch still open")
	}
	if !errors.Is(w.Err(), ErrClosed) {
		t.Errorf("watch Err = %v, want ErrClosed", w.Err())
	}
	if _, err := c.Read(t.Context(), "/y"); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after the end: %v, want ErrClosed", err)
	}
}

func TestPeerClosesMidMessage(t *testing.T) {
	c, p := newPair(t)
	res := async(func() ([]byte, error) { return c.Read(t.Context(), "/x") })
	id := p.expect(XS_READ, 0, "/x\x00")
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:], uint32(XS_READ))
	binary.LittleEndian.PutUint32(b[4:], id)
	binary.LittleEndian.PutUint32(b[12:], 10)
	p.conn.Write(append(b, "abc"...))
	p.conn.Close()
	if _, err := wait(t, res); !errors.Is(err, ErrClosed) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Read: %v, want ErrClosed and io.ErrUnexpectedEOF", err)
	}
}

func TestOversizedReplyClosesConnection(t *testing.T) {
	c, p := newPair(t)
	res := async(func() ([]byte, error) { return c.Read(t.Context(), "/x") })
	id := p.expect(XS_READ, 0, "/x\x00")
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:], uint32(XS_READ))
	binary.LittleEndian.PutUint32(b[4:], id)
	binary.LittleEndian.PutUint32(b[12:], XENSTORE_PAYLOAD_MAX+1)
	p.conn.Write(b) // no payload follows: the client must not wait for one
	_, err := wait(t, res)
	if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrProtocol) {
		t.Fatalf("Read: %v, want ErrClosed and ErrProtocol", err)
	}
}

func TestPayloadLimits(t *testing.T) {
	c, p := newPair(t)
	big := make([]byte, XENSTORE_PAYLOAD_MAX-len("/v\x00")+1)
	if err := c.Write(t.Context(), "/v", big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write of a %d-byte payload: %v, want ErrTooLarge", len(big)+3, err)
	}
	// Nothing went out: the next request is the first the peer sees.
	big = big[:len(big)-1]
	res := async(func() (struct{}, error) { return struct{}{}, c.Write(t.Context(), "/v", big) })
	id := p.expect(XS_WRITE, 0, "/v\x00"+string(big))
	p.send(XS_WRITE, id, 0, "OK\x00")
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidPathsNotSent(t *testing.T) {
	c, p := newPair(t)
	ctx := t.Context()
	for _, path := range []string{"", "/a//b", "/a/", "/a\x00b", "/a b", "@releaseDomain", strings.Repeat("a", XENSTORE_REL_PATH_MAX+1)} {
		if _, err := c.Read(ctx, path); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Read(%q): %v, want fs.ErrInvalid", path, err)
		}
	}
	if _, err := c.Watch(ctx, "/a", "t\x00x"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Watch with a NUL in the token: %v", err)
	}
	res := async(func() ([]byte, error) { return c.Read(ctx, "/") })
	id := p.expect(XS_READ, 0, "/\x00")
	p.send(XS_READ, id, 0, "")
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
}

func TestCancelledCallLeavesConnectionUsable(t *testing.T) {
	c, p := newPair(t)
	ctx, cancel := context.WithCancel(t.Context())
	res := async(func() ([]byte, error) { return c.Read(ctx, "/a") })
	id := p.expect(XS_READ, 0, "/a\x00")
	cancel()
	if _, err := wait(t, res); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Read: %v, want context.Canceled", err)
	}
	p.send(XS_READ, id, 0, "late") // discarded
	res = async(func() ([]byte, error) { return c.Read(t.Context(), "/b") })
	id2 := p.expect(XS_READ, 0, "/b\x00")
	if id2 == id {
		t.Fatalf("req_id %d reused while its reply was outstanding", id)
	}
	p.send(XS_READ, id2, 0, "bee")
	if v, err := wait(t, res); err != nil || string(v) != "bee" {
		t.Fatalf("Read after a cancelled one = %q, %v", v, err)
	}

	// A watch whose WATCH call is given up on is taken back.
	ctx, cancel = context.WithCancel(t.Context())
	wres := async(func() (*Watch, error) { return c.Watch(ctx, "/w", "tok") })
	p.expect(XS_WATCH, 0, "/w\x00tok\x00")
	cancel()
	if _, err := wait(t, wres); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Watch: %v", err)
	}
	p.expect(XS_UNWATCH, 0, "/w\x00tok\x00")

	// A call whose context ends while the peer does not read returns too.
	ctx, cancel = context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Read(ctx, "/stuck"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read with a deadline: %v", err)
	}
}

func TestTransactions(t *testing.T) {
	c, p := newPair(t)
	ctx := t.Context()
	tres := async(func() (*Tx, error) { return c.Start(ctx) })
	id := p.expect(XS_TRANSACTION_START, 0, "\x00")
	p.send(XS_TRANSACTION_START, id, 0, "17\x00")
	tx, err := wait(t, tres)
	if err != nil || tx.ID() != 17 {
		t.Fatalf("Start = %v, %v", tx, err)
	}
	res := async(func() (struct{}, error) { return struct{}{}, tx.Write(ctx, "/a", []byte("v")) })
	id = p.expect(XS_WRITE, 17, "/a\x00v")
	p.send(XS_WRITE, id, 17, "OK\x00")
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	res = async(func() (struct{}, error) { return struct{}{}, tx.Commit(ctx) })
	id = p.expect(XS_TRANSACTION_END, 17, "T\x00")
	p.send(XS_ERROR, id, 17, "EAGAIN\x00")
	if _, err := wait(t, res); !errors.Is(err, ErrRetry) {
		t.Fatalf("Commit: %v, want ErrRetry", err)
	}

	// Transact redoes the whole transaction after EAGAIN.
	calls := 0
	res = async(func() (struct{}, error) {
		return struct{}{}, c.Transact(ctx, func(tx *Tx) error {
			calls++
			_, err := tx.Read(ctx, "/n")
			return err
		})
	})
	for i, commit := range []string{"EAGAIN\x00", "OK\x00"} {
		tx := uint32(20 + i)
		id = p.expect(XS_TRANSACTION_START, 0, "\x00")
		p.send(XS_TRANSACTION_START, id, 0, fmt.Sprintf("%d\x00", tx))
		id = p.expect(XS_READ, tx, "/n\x00")
		p.send(XS_READ, id, tx, "1")
		id = p.expect(XS_TRANSACTION_END, tx, "T\x00")
		if commit == "OK\x00" {
			p.send(XS_TRANSACTION_END, id, tx, commit)
		} else {
			p.send(XS_ERROR, id, tx, commit)
		}
	}
	if _, err := wait(t, res); err != nil || calls != 2 {
		t.Fatalf("Transact = %v after %d calls, want nil after 2", err, calls)
	}

	// fn's error aborts.
	res = async(func() (struct{}, error) {
		return struct{}{}, c.Transact(ctx, func(*Tx) error { return fs.ErrNotExist })
	})
	id = p.expect(XS_TRANSACTION_START, 0, "\x00")
	p.send(XS_TRANSACTION_START, id, 0, "30\x00")
	id = p.expect(XS_TRANSACTION_END, 30, "F\x00")
	p.send(XS_TRANSACTION_END, id, 30, "OK\x00")
	if _, err := wait(t, res); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Transact with a failing fn: %v", err)
	}
}

func TestPerms(t *testing.T) {
	c, p := newPair(t)
	ctx := t.Context()
	pres := async(func() ([]Perm, error) { return c.GetPerms(ctx, "/local/domain/5") })
	id := p.expect(XS_GET_PERMS, 0, "/local/domain/5\x00")
	p.send(XS_GET_PERMS, id, 0, "n0\x00r5\x00b65535\x00")
	perms, err := wait(t, pres)
	want := []Perm{{0, AccessNone}, {5, AccessRead}, {65535, AccessBoth}}
	if err != nil || !reflect.DeepEqual(perms, want) {
		t.Fatalf("GetPerms = %v, %v; want %v", perms, err, want)
	}
	res := async(func() (struct{}, error) {
		return struct{}{}, c.SetPerms(ctx, "/a", Perm{5, AccessNone}, Perm{7, AccessWrite})
	})
	id = p.expect(XS_SET_PERMS, 0, "/a\x00n5\x00w7\x00")
	p.send(XS_SET_PERMS, id, 0, "OK\x00")
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPerms(ctx, "/a"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("SetPerms without perms: %v", err)
	}
	if err := c.SetPerms(ctx, "/a", Perm{1, 'x'}); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("SetPerms with access x: %v", err)
	}
	pres = async(func() ([]Perm, error) { return c.GetPerms(ctx, "/b") })
	id = p.expect(XS_GET_PERMS, 0, "/b\x00")
	p.send(XS_GET_PERMS, id, 0, "q0\x00")
	if _, err := wait(t, pres); !errors.Is(err, ErrProtocol) {
		t.Errorf("GetPerms with a bad reply: %v", err)
	}
	for _, s := range []string{"", "n", "x1", "r-1", "r1a", "r99999999999"} {
		if _, err := ParsePerm(s); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("ParsePerm(%q): %v", s, err)
		}
	}
}

func TestDomainRequests(t *testing.T) {
	c, p := newPair(t)
	ctx := t.Context()
	sres := async(func() (string, error) { return c.GetDomainPath(ctx, 5) })
	id := p.expect(XS_GET_DOMAIN_PATH, 0, "5\x00")
	p.send(XS_GET_DOMAIN_PATH, id, 0, "/local/domain/5\x00")
	if s, err := wait(t, sres); err != nil || s != "/local/domain/5" {
		t.Fatalf("GetDomainPath = %q, %v", s, err)
	}
	for _, tc := range []struct {
		reply string
		want  bool
	}{{"T\x00", true}, {"F\x00", false}} {
		bres := async(func() (bool, error) { return c.IsDomainIntroduced(ctx, 12) })
		id = p.expect(XS_IS_DOMAIN_INTRODUCED, 0, "12\x00")
		p.send(XS_IS_DOMAIN_INTRODUCED, id, 0, tc.reply)
		if got, err := wait(t, bres); err != nil || got != tc.want {
			t.Errorf("IsDomainIntroduced with %q = %v, %v", tc.reply, got, err)
		}
	}
}

func TestReplyOfWrongType(t *testing.T) {
	c, p := newPair(t)
	res := async(func() ([]byte, error) { return c.Read(t.Context(), "/x") })
	id := p.expect(XS_READ, 0, "/x\x00")
	p.send(XS_WRITE, id, 0, "OK\x00")
	if _, err := wait(t, res); !errors.Is(err, ErrProtocol) {
		t.Fatalf("reply of another type: %v, want ErrProtocol", err)
	}
}

// refusingConn plays the xenbus device refusing a request in write(2), as
// Linux does when xenstored will not register a watch.
type refusingConn struct {
	net.Conn
	refuse func([]byte) bool
}

func (r refusingConn) Write(b []byte) (int, error) {
	if r.refuse(b) {
		return 0, &os.PathError{Op: "write", Path: DevicePath, Err: syscall.EEXIST}
	}
	return r.Conn.Write(b)
}

func TestDeviceRefusesOneRequest(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := newClient(refusingConn{a, func(m []byte) bool { return getSockMsg(m).Type == XS_WATCH }}, true)
	defer c.Close()
	p := &peer{t: t, conn: b, r: bufio.NewReader(b)}
	if _, err := c.Watch(t.Context(), "data", "t"); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("refused Watch: %v, want fs.ErrExist", err)
	}
	res := async(func() ([]byte, error) { return c.Read(t.Context(), "data") })
	id := p.expect(XS_READ, 0, "data\x00")
	p.send(XS_READ, id, 0, "ok")
	if v, err := wait(t, res); err != nil || string(v) != "ok" {
		t.Fatalf("Read after a refused request = %q, %v", v, err)
	}
	// The device holds header and payload in XENSTORE_PAYLOAD_MAX bytes.
	v := make([]byte, XENSTORE_PAYLOAD_MAX-SizeOfSockMsg-len("/v\x00")+1)
	if err := c.Write(t.Context(), "/v", v); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write of %d bytes to the device: %v, want ErrTooLarge", len(v)+3, err)
	}
}

func TestDialAndOpen(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "socket")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				for {
					h, payload, err := readMsg(conn)
					if err != nil {
						return
					}
					conn.Write(appendMsg(nil, h, payload)) // echo
				}
			}()
		}
	}()
	check := func(c *Client) {
		t.Helper()
		defer c.Close()
		if v, err := c.Read(t.Context(), "/echo"); err != nil || string(v) != "/echo\x00" {
			t.Errorf("Read over the socket = %q, %v", v, err)
		}
	}
	c, err := Dial(t.Context(), sock)
	if err != nil {
		t.Fatal(err)
	}
	check(c)

	missing := filepath.Join(dir, "missing")
	oldSockets, oldDevice := socketPaths, devicePath
	t.Cleanup(func() { socketPaths, devicePath = oldSockets, oldDevice })
	socketPaths, devicePath = []string{missing + "-1", sock}, missing+"-dev"
	t.Setenv(EnvPath, "")
	c, err = Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	check(c)

	socketPaths = []string{missing + "-1"}
	t.Setenv(EnvPath, sock)
	c, err = Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	check(c)

	t.Setenv(EnvPath, missing+"-env")
	_, err = Open(t.Context())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open with nothing there: %v, want fs.ErrNotExist", err)
	}
	for _, p := range []string{missing + "-env", missing + "-1", missing + "-dev", EnvPath} {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("Open's error does not name %s: %v", p, err)
		}
	}

	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, nil, 0o600)
	if _, err := Dial(t.Context(), regular); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Dial of a regular file: %v, want fs.ErrInvalid", err)
	}
}

func TestDialCharacterDevice(t *testing.T) {
	// /dev/null stands in for the xenbus device: a character device whose
	// reads end at once, so the client goes down with io.EOF.
	c, err := Dial(t.Context(), "/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.device || c.maxPayload != devicePayloadMax {
		t.Errorf("a character device is not treated as the xenbus device")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client of /dev/null still up")
	}
	if err := c.Err(); !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
		t.Errorf("Err = %v, want ErrClosed and io.EOF", err)
	}
}
