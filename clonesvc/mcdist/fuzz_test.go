package mcdist

import (
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary datagrams to a receiver: open must never
// panic, and must accept nothing it did not seal for the family (the
// seeds include valid packets, which open accepts once).
func FuzzDecode(f *testing.F) {
	// A fixed sender ID: fuzz workers are processes of their own and must
	// agree on who sealed the seeds.
	sender := mustCodec(f, "fuzz", unitKey)
	sender.sender = 0x5eed
	aead, err := sender.senderKey(sender.sender)
	if err != nil {
		f.Fatal(err)
	}
	sender.aead = aead
	for _, typ := range []Type{TypeRequest, TypeFragment, TypeZero, TypeReport, TypeNack} {
		pkt, err := sender.seal(nil, typ, []byte("payload"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pkt)
	}
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		receiver := mustCodec(t, "fuzz", unitKey)
		h, payload, reason, err := receiver.open(pkt)
		if (reason == dropNone) != (err == nil) {
			t.Fatalf("reason %v with error %v", reason, err)
		}
		if reason == dropNone && (h.Sender != sender.sender || len(payload) != len(pkt)-Overhead) {
			t.Fatalf("accepted a packet %v did not seal", h)
		}
	})
}

// FuzzDecodePayloads feeds arbitrary payloads to every payload parser:
// none may panic, and whatever parses re-encodes to the same bytes.
func FuzzDecodePayloads(f *testing.F) {
	f.Add(AppendRequest(nil, Request{Retry: true, Pages: []uint64{1, 2}}))
	f.Add(AppendFragment(nil, Fragment{Page: 3, Stream: 9, Index: 1, Count: 4, Data: make([]byte, 1024)}))
	f.Add(AppendPageList(nil, PageList{Stream: 2, Pages: []uint64{8}}))
	f.Add(AppendReport(nil, Report{IntervalMillis: 100, Bytes: 1, Packets: 2, Expected: 3}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := ParseRequest(b); err == nil && string(AppendRequest(nil, r)) != string(b) {
			t.Errorf("request %+v re-encodes differently", r)
		}
		if fr, err := ParseFragment(b); err == nil {
			if string(AppendFragment(nil, fr)) != string(b) {
				t.Errorf("fragment %+v re-encodes differently", fr)
			}
			newReassembler().add(fr, time.Now())
		}
		if l, err := ParsePageList(b); err == nil && string(AppendPageList(nil, l)) != string(b) {
			t.Errorf("page list %+v re-encodes differently", l)
		}
		if r, err := ParseReport(b); err == nil && string(AppendReport(nil, r)) != string(b) {
			t.Errorf("report %+v re-encodes differently", r)
		}
	})
}
