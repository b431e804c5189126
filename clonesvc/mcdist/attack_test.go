package mcdist

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/snowflock/snowflock/clonesvc/descriptor"
)

// sealAt seals like c.seal but stamps the packet with time at.
func sealAt(c *codec, typ Type, payload []byte, at time.Time) []byte {
	h := Header{Type: typ, Length: uint16(Overhead + len(payload)), Family: c.family, Sender: c.sender, Seq: c.seq.Add(1), Time: at.UnixMilli()}
	b := appendHeader(nil, h)
	return c.aead.Seal(b, nonce(h.Seq), payload, b)
}

// pagePackets seals page p's fragments (data: the page's bytes).
func pagePackets(tb testing.TB, c *codec, p uint64, data []byte) [][]byte {
	tb.Helper()
	n := fragmentCount(DefaultMaxDatagram)
	var pkts [][]byte
	for i := range n {
		off, end := fragmentSpan(i, n)
		pkt, err := c.seal(nil, TypeFragment, AppendFragment(nil, Fragment{Page: p, Stream: 0, Index: uint8(i), Count: uint8(n), Data: data[off:end]}))
		if err != nil {
			tb.Fatal(err)
		}
		pkts = append(pkts, pkt)
	}
	return pkts
}

func mustCodec(tb testing.TB, id string, key descriptor.Key) *codec {
	tb.Helper()
	c, err := newCodec(id, key, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// Forged, corrupted, other-family, malformed, replayed and old packets
// are dropped, counted by reason, and never stored; the real pages still
// arrive intact afterwards.
func TestBadPacketsDropped(t *testing.T) {
	b := newBed(t, 3)
	f := newFamily(16, 0)
	srv, _ := startServer(t, b, 0, f.serverConfig(b, 0))
	st := newMemStore()
	c := startClient(t, b, 1, f.clientConfig(b, 0, st))
	var raw *net.UDPConn
	b.inWait(2, func() {
		var err error
		if raw, err = listenUnicast(netip.AddrPortFrom(b.hosts[2].addr, 0), nil, 1); err != nil {
			t.Error(err)
		}
	})
	if raw == nil {
		t.FailNow()
	}
	defer raw.Close()
	send := func(to netip.AddrPort, pkts ...[]byte) {
		t.Helper()
		for _, p := range pkts {
			if _, err := raw.WriteToUDPAddrPort(p, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wrongKey descriptor.Key
	copy(wrongKey[:], f.key[:])
	wrongKey[0] ^= 1
	forger, member := mustCodec(t, f.id, wrongKey), mustCodec(t, f.id, f.key)
	stranger := mustCodec(t, f.id+"-other", f.key)

	send(testGroup, pagePackets(t, forger, 5, make([]byte, PageSize))...) // 4 forged
	corrupt := pagePackets(t, member, 6, make([]byte, PageSize))
	for _, p := range corrupt {
		p[HeaderSize+20] ^= 0x80 // 4 forged: ciphertext changed
	}
	send(testGroup, corrupt...)
	send(testGroup, pagePackets(t, stranger, 5, f.page(5))[0]) // other family
	junk := pagePackets(t, member, 9, f.page(9))[0]
	junk[4] = Version + 1
	send(testGroup, []byte("not an mcdist packet"), junk) // 2 malformed
	good := pagePackets(t, member, 7, f.page(7))
	send(testGroup, good...)
	send(testGroup, good...) // 4 replays: stale
	old := AppendFragment(nil, Fragment{Page: 8, Index: 0, Count: 4, Data: f.page(8)[:1024]})
	send(testGroup, sealAt(member, TypeFragment, old, time.Now().Add(-time.Hour))) // stale: too old
	fake, err := forger.seal(nil, TypeRequest, AppendRequest(nil, Request{Pages: []uint64{1}}))
	if err != nil {
		t.Fatal(err)
	}
	send(srv.cfg.Listen, fake) // forged request

	want := Drops{Forged: 8, OtherFamily: 1, Malformed: 2, Stale: 5}
	if !eventually(3*time.Second, func() bool { return c.Stats().Dropped == want && srv.Stats().Dropped.Forged == 1 }) {
		t.Fatalf("client drops %+v, want %+v; server drops %+v, want 1 forged", c.Stats().Dropped, want, srv.Stats().Dropped)
	}
	if st.Have(5) || st.Have(6) || st.Have(8) {
		t.Fatal("a forged, corrupted or stale page was stored")
	}
	if got, _ := st.get(7); !bytes.Equal(got, f.page(7)) {
		t.Fatal("a member's valid page was not stored intact")
	}
	if s := srv.Stats(); s.PagesServed != 0 || s.PagesRequested != 0 {
		t.Errorf("server answered a forged request: %+v", s)
	}
	for _, p := range []uint64{5, 6, 8} {
		if err := c.Fetch(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []uint64{5, 6, 7, 8} {
		if got, _ := st.get(p); !bytes.Equal(got, f.page(p)) {
			t.Errorf("page %d differs from the image", p)
		}
	}
}

// A request naming several pages is served in order, and a page named
// twice is sent once.
func TestBatchServedInOrder(t *testing.T) {
	b := newBed(t, 3)
	f := newFamily(32, 0)
	startServer(t, b, 0, f.serverConfig(b, 0))
	var group, uni *net.UDPConn
	b.inWait(1, func() {
		var err error
		if group, err = listenGroup(testGroup, nil); err == nil {
			uni, err = listenUnicast(netip.AddrPortFrom(b.hosts[1].addr, 0), nil, 1)
		}
		if err != nil {
			t.Error(err)
		}
	})
	if uni == nil {
		t.FailNow()
	}
	defer group.Close()
	defer uni.Close()
	member := mustCodec(t, f.id, f.key)
	req, err := member.seal(nil, TypeRequest, AppendRequest(nil, Request{Pages: []uint64{9, 3, 17, 3, 40}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uni.WriteToUDPAddrPort(req, netip.AddrPortFrom(b.hosts[0].addr, serverPort)); err != nil {
		t.Fatal(err)
	}
	var order []uint64
	buf := make([]byte, MaxPacket)
	_ = group.SetReadDeadline(time.Now().Add(2 * time.Second))
	for len(order) < 3*fragmentCount(DefaultMaxDatagram) {
		n, err := group.Read(buf)
		if err != nil {
			t.Fatalf("after %v: %v", order, err)
		}
		h, payload, reason, err := member.open(buf[:n])
		if reason != dropNone || h.Type != TypeFragment {
			t.Fatalf("unexpected packet: %v %v", h.Type, err)
		}
		fr, err := ParseFragment(payload)
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, fr.Page)
	}
	want := []uint64{9, 9, 9, 9, 3, 3, 3, 3, 17, 17, 17, 17}
	if !slices.Equal(order, want) {
		t.Errorf("fragments of pages %v, want %v", order, want)
	}
	// Page 40 is past the image: the requester gets a nack.
	_ = uni.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := uni.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	h, payload, _, err := member.open(buf[:n])
	if err != nil || h.Type != TypeNack {
		t.Fatalf("got %v (%v), want a nack", h.Type, err)
	}
	if l, err := ParsePageList(payload); err != nil || !slices.Equal(l.Pages, []uint64{40}) {
		t.Errorf("nack for %v (%v), want [40]", l.Pages, err)
	}
}
