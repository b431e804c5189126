package xenchan

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snowflock/snowflock/egosf/guestproto"
	"github.com/snowflock/snowflock/internal/xenstore"
)

const guest = 5

// bed is a memStore with dom0's and one guest's connections.
type bed struct {
	s     *memStore
	dom0  *xenstore.Client
	guest *xenstore.Client
}

func newBed(t *testing.T) *bed {
	s := newMemStore()
	s.addDomain(guest)
	s.addDomain(guest + 1)
	return &bed{s: s, dom0: s.connect(t, 0), guest: s.connect(t, guest)}
}

func (b *bed) host(t *testing.T, opts ...Option) *Conn {
	t.Helper()
	c, err := Host(t.Context(), b.dom0, guest, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (b *bed) guestConn(t *testing.T, opts ...Option) *Conn {
	t.Helper()
	c, err := Guest(t.Context(), b.guest, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// names lists a direction of the guest's channel, as dom0 sees it.
func (b *bed) names(t *testing.T, dir string) []string {
	t.Helper()
	names, err := b.dom0.Directory(t.Context(), fmt.Sprintf("/local/domain/%d/%s/%s", guest, Dir, dir))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// readN reads n bytes from c, failing after a timeout.
func readN(t *testing.T, c *Conn, n int) []byte {
	t.Helper()
	done := make(chan struct{})
	var got []byte
	var err error
	go func() {
		defer close(done)
		got = make([]byte, n)
		_, err = io.ReadFull(c, got)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("reading %d bytes timed out", n)
	}
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestGuestProtoFramesBothWays sends a 16 KiB frame and many small ones
// each way at once.
func TestGuestProtoFramesBothWays(t *testing.T) {
	b := newBed(t)
	h, g := b.host(t), b.guestConn(t)
	var msgs []*guestproto.Message
	msgs = append(msgs, &guestproto.Message{ID: 1, Reply: true, Output: random(16 << 10)})
	for i := range 300 {
		msgs = append(msgs, &guestproto.Message{ID: uint64(i + 2), Op: guestproto.OpKill, Ticket: fmt.Sprint("t-", i)})
	}
	msgs = append(msgs, &guestproto.Message{ID: 999, Reply: true, Output: random(16 << 10)})
	send := func(c *Conn) chan error {
		errc := make(chan error, 1)
		go func() {
			for _, m := range msgs {
				if err := guestproto.Write(c, m); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		return errc
	}
	receive := func(c *Conn) chan error {
		errc := make(chan error, 1)
		go func() {
			r := guestproto.NewReader(c)
			for _, want := range msgs {
				got, err := r.Read()
				if err != nil {
					errc <- err
					return
				}
				if got.ID != want.ID || got.Ticket != want.Ticket || !bytes.Equal(got.Output, want.Output) {
					errc <- fmt.Errorf("got message %d, want %d", got.ID, want.ID)
					return
				}
			}
			errc <- nil
		}()
		return errc
	}
	waits := []chan error{send(g), send(h), receive(h), receive(g)}
	for _, errc := range waits {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("timed out")
		}
	}
	if left := b.names(t, ToHost); len(left) != 0 {
		t.Errorf("chunks left in g2h after reading: %v", left)
	}
	// The guest's chunks landed in its own subtree, written by itself.
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if b.s.writes[guest] == 0 || b.s.writes[guest+1] != 0 {
		t.Errorf("writes by domain: %v", b.s.writes)
	}
}

func TestRestartedWriterContinuesAfterHighestSeq(t *testing.T) {
	b := newBed(t)
	g1 := b.guestConn(t, WithChunkSize(4))
	if _, err := g1.Write([]byte("aaaabbbb")); err != nil {
		t.Fatal(err)
	}
	g1.Close()
	first := b.names(t, ToHost)
	if len(first) != 2 {
		t.Fatalf("g2h after the first writer: %v, want 2 chunks", first)
	}
	g2 := b.guestConn(t, WithChunkSize(4))
	if _, err := g2.Write([]byte("cccc")); err != nil {
		t.Fatal(err)
	}
	all := b.names(t, ToHost)
	if len(all) != 3 {
		t.Fatalf("g2h after the second writer: %v", all)
	}
	added := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return slices.Contains(first, n) })
	if len(added) != 1 || added[0] <= slices.Max(first) || len(added[0]) != seqDigits {
		t.Fatalf("the restarted writer wrote %v after %v", added, first)
	}
	// The reader, opened after all of it, gets it in order.
	h := b.host(t)
	if got := readN(t, h, 12); string(got) != "aaaabbbbcccc" {
		t.Fatalf("read %q", got)
	}
}

func TestReaderReadsInSeqOrderWhateverTheDirectoryOrder(t *testing.T) {
	b := newBed(t)
	ctx := t.Context()
	// Created in reverse: xenstored lists children in creation order.
	for _, seq := range []uint64{3, 2, 1} {
		if err := b.guest.Write(ctx, Dir+"/"+ToHost+"/"+seqName(seq), []byte{byte('0' + seq)}); err != nil {
			t.Fatal(err)
		}
	}
	// Names that are not chunks are left alone.
	if err := b.guest.Write(ctx, Dir+"/"+ToHost+"/junk", []byte("x")); err != nil {
		t.Fatal(err)
	}
	h := b.host(t)
	if got := readN(t, h, 3); string(got) != "123" {
		t.Fatalf("read %q, want 123", got)
	}
	// And the writer continues after seq 3 on the guest's next open.
	g := b.guestConn(t)
	if _, err := g.Write([]byte("4")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, h, 1); string(got) != "4" {
		t.Fatalf("read %q", got)
	}
}

func TestBackpressure(t *testing.T) {
	b := newBed(t)
	g := b.guestConn(t, WithChunkSize(8), WithWindow(4), WithPollInterval(20*time.Millisecond))
	data := random(64)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	n, err := g.WriteContext(ctx, data)
	if !errors.Is(err, context.DeadlineExceeded) || n != 32 {
		t.Fatalf("WriteContext with nobody reading = %d, %v; want 32 (a window) and DeadlineExceeded", n, err)
	}
	if got := len(b.names(t, ToHost)); got != 4 {
		t.Fatalf("%d chunks unread, want the window of 4", got)
	}
	// A reader makes room: the rest goes, and the stream is whole.
	h := b.host(t)
	errc := make(chan error, 1)
	go func() {
		_, err := g.Write(data[n:])
		errc <- err
	}()
	if got := readN(t, h, 64); !bytes.Equal(got, data) {
		t.Fatalf("read % x, want % x", got, data)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestBlockedWriteEndsAtClose(t *testing.T) {
	b := newBed(t)
	g := b.guestConn(t, WithChunkSize(1), WithWindow(1))
	errc := make(chan error, 1)
	go func() {
		_, err := g.Write([]byte("ab"))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	g.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked Write after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked Write")
	}
}

func TestPollingWithoutEvents(t *testing.T) {
	b := newBed(t)
	b.s.mu.Lock()
	b.s.dropEvents = true
	b.s.mu.Unlock()
	h := b.host(t, WithPollInterval(20*time.Millisecond))
	g := b.guestConn(t, WithPollInterval(20*time.Millisecond), WithWindow(2), WithChunkSize(3))
	go g.Write([]byte("no events at all"))
	if got := readN(t, h, 16); string(got) != "no events at all" {
		t.Fatalf("read %q", got)
	}
}

func TestGuestConfinedToItsDomain(t *testing.T) {
	b := newBed(t)
	ctx := t.Context()
	other := fmt.Sprintf("/local/domain/%d/%s/%s/%s", guest+1, Dir, ToHost, seqName(1))
	if err := b.guest.Write(ctx, other, []byte("forged")); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("domain %d writing under domain %d: %v, want fs.ErrPermission", guest, guest+1, err)
	}
	if _, err := b.guest.Read(ctx, fmt.Sprintf("/local/domain/%d/data", guest+1)); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("domain %d reading domain %d's data: %v", guest, guest+1, err)
	}
	// What the guest writes on its channel lands under its own domain,
	// and domain 6's channel sees none of it.
	g := b.guestConn(t)
	if _, err := g.Write([]byte("mine")); err != nil {
		t.Fatal(err)
	}
	if got := b.names(t, ToHost); len(got) != 1 {
		t.Fatalf("guest %d's g2h: %v", guest, got)
	}
	h6, err := Host(ctx, b.dom0, guest+1, WithPollInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer h6.Close()
	time.AfterFunc(100*time.Millisecond, func() { h6.Close() })
	if n, err := h6.Read(make([]byte, 8)); !errors.Is(err, ErrClosed) {
		t.Fatalf("domain %d's channel read %d bytes, %v", guest+1, n, err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	b := newBed(t)
	h := b.host(t)
	errc := make(chan error, 1)
	go func() {
		_, err := h.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Read at Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := h.Read(make([]byte, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := h.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCloseKeepsUnreadChunks(t *testing.T) {
	b := newBed(t)
	h := b.host(t)
	h.Close() // nothing reads h2g now
	h = b.host(t)
	if _, err := h.Write([]byte("for later")); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if got := b.names(t, ToGuest); len(got) != 1 {
		t.Fatalf("h2g after Close: %v", got)
	}
	g := b.guestConn(t)
	if got := readN(t, g, 9); string(got) != "for later" {
		t.Fatalf("read %q", got)
	}
}

func TestBrokenConnectionFailsRead(t *testing.T) {
	b := newBed(t)
	g := b.guestConn(t)
	b.guest.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := g.Read(make([]byte, 1))
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, xenstore.ErrClosed) {
			t.Fatalf("Read over a closed xenstore connection: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read hangs over a closed xenstore connection")
	}
}

func TestHostGivesTheGuestItsNodes(t *testing.T) {
	b := newBed(t)
	ctx := t.Context()
	// An xenstored that makes dom0 the owner of what it creates, and a
	// channel directory dom0 made before.
	b.s.mu.Lock()
	b.s.creatorOwns = true
	b.s.mu.Unlock()
	if err := b.dom0.Mkdir(ctx, fmt.Sprintf("/local/domain/%d/%s", guest, Dir)); err != nil {
		t.Fatal(err)
	}
	h := b.host(t, WithChunkSize(4))
	base := fmt.Sprintf("/local/domain/%d/%s", guest, Dir)
	for _, p := range []string{base, base + "/" + ToHost, base + "/" + ToGuest} {
		perms, err := b.dom0.GetPerms(ctx, p)
		if err != nil || perms[0].Domid != guest {
			t.Fatalf("perms of %s: %v, %v; want owner %d", p, perms, err, guest)
		}
	}
	if _, err := h.Write([]byte("12345678")); err != nil {
		t.Fatal(err)
	}
	for _, n := range b.names(t, ToGuest) {
		perms, err := b.dom0.GetPerms(ctx, base+"/"+ToGuest+"/"+n)
		if err != nil || perms[0].Domid != guest {
			t.Fatalf("perms of chunk %s: %v, %v", n, perms, err)
		}
	}
	g := b.guestConn(t)
	if got := readN(t, g, 8); string(got) != "12345678" {
		t.Fatalf("read %q", got)
	}
	if left := b.names(t, ToGuest); len(left) != 0 {
		t.Errorf("the guest could not remove %v", left)
	}
}

func TestReset(t *testing.T) {
	b := newBed(t)
	h := b.host(t)
	if _, err := h.Write([]byte("stale")); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if err := Reset(t.Context(), b.dom0, guest); err != nil {
		t.Fatal(err)
	}
	if err := Reset(t.Context(), b.dom0, guest); err != nil {
		t.Fatalf("Reset of nothing: %v", err)
	}
	h = b.host(t)
	if _, err := h.Write([]byte("fresh")); err != nil {
		t.Fatal(err)
	}
	g := b.guestConn(t)
	if got := readN(t, g, 5); string(got) != "fresh" {
		t.Fatalf("read %q after Reset", got)
	}
}

func TestOptionsChecked(t *testing.T) {
	b := newBed(t)
	for _, o := range []Option{WithChunkSize(0), WithChunkSize(MaxChunkSize + 1), WithWindow(0), WithPollInterval(0)} {
		if _, err := Guest(t.Context(), b.guest, o); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("bad option: %v", err)
		}
	}
	if _, err := Host(t.Context(), b.dom0, 0); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Host of dom0: %v", err)
	}
	if _, err := Host(t.Context(), b.dom0, 77); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Host of a domain that does not exist: %v", err)
	}
	if _, err := b.dom0.Read(t.Context(), "/local/domain/77"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Host of a missing domain left nodes behind: %v", err)
	}
	// The largest chunk fits a WRITE on the xenbus device beside the
	// longest chunk path.
	path := fmt.Sprintf("/local/domain/%d/%s/%s/%020d", uint32(1<<32-1), Dir, ToGuest, uint64(1<<64-1))
	if n := len(path) + 1 + MaxChunkSize; n > xenstore.XENSTORE_PAYLOAD_MAX-xenstore.SizeOfSockMsg {
		t.Errorf("a WRITE of a %d-byte chunk at %s is %d bytes", MaxChunkSize, path, n)
	}
}

func TestParseSeq(t *testing.T) {
	for name, want := range map[string]bool{
		"0000000000000001": true, "1": true, "18446744073709551615": true,
		"": false, "18446744073709551616": false, "12a": false, "-1": false, "+1": false, " 1": false,
	} {
		if _, ok := parseSeq(name); ok != want {
			t.Errorf("parseSeq(%q) ok = %v", name, ok)
		}
	}
	if s := seqName(42); s != "0000000000000042" {
		t.Errorf("seqName(42) = %q", s)
	}
}

// FuzzParseSeq: chunk names come from the other side (a guest writes its
// own g2h as it likes).
func FuzzParseSeq(f *testing.F) {
	for _, s := range []string{"0000000000000001", "18446744073709551615", "99999999999999999999", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		seq, ok := parseSeq(name)
		if !ok {
			return
		}
		if strings.TrimLeft(name, "0") != strings.TrimLeft(fmt.Sprint(seq), "0") {
			t.Fatalf("parseSeq(%q) = %d", name, seq)
		}
		if got, ok := parseSeq(seqName(seq)); !ok || got != seq {
			t.Fatalf("seqName(%d) = %q does not parse back", seq, seqName(seq))
		}
	})
}

// failOnce makes the guest's first request of type typ on the chunk of
// seq fail with errno.
func (b *bed) failOnce(typ xenstore.MsgType, seq uint64, errno string) {
	path := fmt.Sprintf("/local/domain/%d/%s/%s/%s", guest, Dir, ToGuest, seqName(seq))
	failed := false
	b.s.mu.Lock()
	b.s.fault = func(domid uint32, t xenstore.MsgType, p string) string {
		if domid == guest && t == typ && p == path && !failed {
			failed = true
			return errno
		}
		return ""
	}
	b.s.mu.Unlock()
}

func TestFailedRemoveDoesNotDuplicate(t *testing.T) {
	b := newBed(t)
	b.failOnce(xenstore.XS_RM, 1, "EBUSY")
	h := b.host(t, WithChunkSize(1))
	if _, err := h.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	g := b.guestConn(t, WithPollInterval(20*time.Millisecond))
	if got := readN(t, g, 2); string(got) != "ab" {
		t.Fatalf("read %q", got)
	}
	if _, err := h.Write([]byte("c")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, g, 1); string(got) != "c" {
		t.Fatalf("read %q after a failed RM, want c (no duplicate)", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(b.names(t, ToGuest)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("chunks never removed: %v", b.names(t, ToGuest))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUnreadableChunkKeepsOrder(t *testing.T) {
	b := newBed(t)
	b.failOnce(xenstore.XS_READ, 1, "EACCES") // as before sfld's SET_PERMS
	h := b.host(t, WithChunkSize(1))
	if _, err := h.Write([]byte("12")); err != nil {
		t.Fatal(err)
	}
	g := b.guestConn(t, WithPollInterval(20*time.Millisecond))
	if got := readN(t, g, 2); string(got) != "12" {
		t.Fatalf("read %q, want 12", got)
	}
}

func TestReadAheadIsBounded(t *testing.T) {
	b := newBed(t)
	h := b.host(t, WithWindow(maxWindow))
	data := random(200 << 10)
	errc := make(chan error, 1)
	go func() {
		_, err := h.Write(data)
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	g := b.guestConn(t)
	// Nobody reads g: its reader stops at the read-ahead limit and leaves
	// the rest in xenstore.
	var buffered int
	for range 100 {
		time.Sleep(10 * time.Millisecond)
		g.mu.Lock()
		buffered = g.buf.Len()
		g.mu.Unlock()
		if buffered >= readAhead {
			break
		}
	}
	time.Sleep(50 * time.Millisecond)
	g.mu.Lock()
	buffered = g.buf.Len()
	g.mu.Unlock()
	if buffered < readAhead || buffered >= readAhead+DefaultChunkSize {
		t.Fatalf("%d bytes read ahead, want %d..%d", buffered, readAhead, readAhead+DefaultChunkSize-1)
	}
	left := len(b.names(t, ToGuest))
	if want := (len(data) - buffered + DefaultChunkSize - 1) / DefaultChunkSize; left != want {
		t.Fatalf("%d chunks left in xenstore, want %d", left, want)
	}
	if got := readN(t, g, len(data)); !bytes.Equal(got, data) {
		t.Fatal("stream corrupted")
	}
}
