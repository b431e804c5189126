package mcdist

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/snowflock/snowflock/clonesvc/descriptor"
	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

var unitKey = descriptor.Key{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}

func TestCodecRoundTripAndDrops(t *testing.T) {
	a, b := mustCodec(t, "fam", unitKey), mustCodec(t, "fam", unitKey)
	payload := AppendRequest(nil, Request{Retry: true, Pages: []uint64{7, 1 << 40}})
	pkt, err := a.seal(nil, TypeRequest, payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkt) != Overhead+len(payload) || bytes.Contains(pkt, payload[3:]) {
		t.Fatalf("packet of %d bytes, or payload in clear", len(pkt))
	}
	h, got, reason, err := b.open(pkt)
	if reason != dropNone || err != nil || h.Type != TypeRequest || h.Sender != a.sender || !bytes.Equal(got, payload) {
		t.Fatalf("open: %v %v %+v", reason, err, h)
	}
	other := mustCodec(t, "fam2", unitKey)
	wrong := unitKey
	wrong[31]++
	forger := mustCodec(t, "fam", wrong)
	cases := []struct {
		name string
		pkt  func() []byte
		want dropReason
	}{
		{"replay", func() []byte { return pkt }, dropStale},
		{"own packet", func() []byte { p, _ := b.seal(nil, TypeReport, nil); return p }, dropStale},
		{"other family", func() []byte { p, _ := other.seal(nil, TypeReport, nil); return p }, dropOtherFamily},
		{"wrong key", func() []byte { p, _ := forger.seal(nil, TypeReport, nil); return p }, dropForged},
		{"flipped header bit", func() []byte { p, _ := a.seal(nil, TypeReport, nil); p[33] ^= 1; return p }, dropForged},
		{"flipped tag bit", func() []byte { p, _ := a.seal(nil, TypeReport, nil); p[len(p)-1] ^= 1; return p }, dropForged},
		{"old", func() []byte { return sealAt(a, TypeReport, nil, time.Now().Add(-time.Hour)) }, dropStale},
		{"future", func() []byte { return sealAt(a, TypeReport, nil, time.Now().Add(time.Hour)) }, dropStale},
		{"short", func() []byte { return pkt[:Overhead-1] }, dropMalformed},
		{"magic", func() []byte { p, _ := a.seal(nil, TypeReport, nil); p[0] = 'X'; return p }, dropMalformed},
		{"version", func() []byte { p, _ := a.seal(nil, TypeReport, nil); p[4] = 2; return p }, dropMalformed},
		{"type", func() []byte { p, _ := a.seal(nil, TypeReport, nil); p[5] = 9; return p }, dropMalformed},
		{"length", func() []byte { p, _ := a.seal(nil, TypeReport, nil); return append(p, 0) }, dropMalformed},
	}
	for _, c := range cases {
		if _, _, reason, err := b.open(c.pkt()); reason != c.want || err == nil {
			t.Errorf("%s: dropped as %v (%v), want %v", c.name, reason, err, c.want)
		}
	}
}

func TestNewCodecRejectsBadIdentity(t *testing.T) {
	if _, err := newCodec("", unitKey, 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty family: %v", err)
	}
	if _, err := newCodec("f", descriptor.Key{}, 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("zero key: %v", err)
	}
}

func TestWindow(t *testing.T) {
	var w window
	for _, s := range []uint64{5, 3, 4, 1000, 6, 2000} {
		if !w.mark(s) {
			t.Fatalf("fresh %d refused", s)
		}
	}
	for _, s := range []uint64{5, 3, 1000, 2000, 2000 - windowSize, 976} {
		if w.mark(s) {
			t.Errorf("%d accepted twice or too old", s)
		}
	}
	if !w.mark(2000-windowSize+1) || !w.mark(1999) {
		t.Error("an unseen sequence inside the window was refused")
	}
}

func TestPayloadsRoundTrip(t *testing.T) {
	r := Request{Retry: true, Pages: []uint64{3, 1, 4}}
	if got, err := ParseRequest(AppendRequest(nil, r)); err != nil || got.Retry != r.Retry || len(got.Pages) != 3 || got.Pages[2] != 4 {
		t.Errorf("request: %+v %v", got, err)
	}
	rep := Report{IntervalMillis: 100, Bytes: 1 << 33, Packets: 7, Expected: 9}
	if got, err := ParseReport(AppendReport(nil, rep)); err != nil || got != rep {
		t.Errorf("report: %+v %v", got, err)
	}
	page := bytes.Repeat([]byte{0xab}, PageSize)
	for _, maxDatagram := range []int{MinDatagram, DefaultMaxDatagram, 9000, MaxPacket} {
		n := fragmentCount(maxDatagram)
		asm := newReassembler()
		var whole []byte
		for i := n - 1; i >= 0; i-- { // out of order
			off, end := fragmentSpan(i, n)
			b := AppendFragment(nil, Fragment{Page: 9, Stream: 1, Index: uint8(i), Count: uint8(n), Data: page[off:end]})
			if Overhead+len(b) > maxDatagram {
				t.Fatalf("max %d: fragment of %d bytes", maxDatagram, Overhead+len(b))
			}
			f, err := ParseFragment(b)
			if err != nil {
				t.Fatal(err)
			}
			var done bool
			if whole, done = asm.add(f, time.Now()); done != (i == 0) {
				t.Fatalf("max %d: fragment %d completed=%v", maxDatagram, i, done)
			}
		}
		if !bytes.Equal(whole, page) {
			t.Errorf("max %d: reassembled page differs", maxDatagram)
		}
	}
	bad := [][]byte{
		AppendRequest(nil, Request{}),                 // no pages
		AppendPageList(nil, PageList{Pages: nil})[:5], // short
		AppendFragment(nil, Fragment{Count: 4, Index: 4, Data: make([]byte, 1024)}),
		AppendFragment(nil, Fragment{Count: 4, Index: 0, Data: make([]byte, 1023)}),
		AppendFragment(nil, Fragment{Count: 65, Index: 0, Data: make([]byte, 64)}),
	}
	for i, b := range bad {
		_, e1 := ParseRequest(b)
		_, e2 := ParseFragment(b)
		_, e3 := ParsePageList(b)
		_, e4 := ParseReport(b)
		if e1 == nil && e2 == nil && e3 == nil && e4 == nil {
			t.Errorf("bad payload %d parsed", i)
		}
	}
}

func TestPacerFollowsSlowestLossyReceiver(t *testing.T) {
	p := newPacer(1<<20, 100<<20, 0.02, time.Second)
	now := time.Now()
	p.report(1, Report{IntervalMillis: 100, Bytes: 1 << 20, Packets: 100, Expected: 100}, now) // no loss
	if p.limit() != 100<<20 {
		t.Fatalf("a loss-free receiver moved the rate to %v", p.limit())
	}
	p.report(2, Report{IntervalMillis: 100, Bytes: 500 << 10, Packets: 80, Expected: 100}, now) // 5 MB/s, 20% loss
	if got, want := p.limit(), float64(500<<10)*10*1.1; got < want*0.99 || got > want*1.01 {
		t.Fatalf("rate %v after a lossy receiver at 5 MiB/s, want %v", got, want)
	}
	p.report(1, Report{IntervalMillis: 100, Bytes: 1 << 20, Packets: 100, Expected: 100}, now.Add(2*time.Second))
	if got := p.limit(); got <= 5.5*(1<<20) || got >= 100<<20 {
		t.Errorf("rate %v once the lossy receiver went quiet, want growing gradually", got)
	}
}
