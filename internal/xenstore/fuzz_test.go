package xenstore

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func FuzzReadMsg(f *testing.F) {
	f.Add(appendMsg(nil, SockMsg{Type: XS_READ, ReqID: 1}, []byte("/a\x00")))
	f.Add(appendMsg(appendMsg(nil, SockMsg{Type: XS_WATCH_EVENT}, []byte("data\x00tok\x00")),
		SockMsg{Type: XS_ERROR, ReqID: 9, TxID: 3}, []byte("ENOENT\x00")))
	f.Add([]byte{2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{2, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			start := len(data) - r.Len()
			h, payload, err := readMsg(r)
			if err != nil {
				if h.Len > XENSTORE_PAYLOAD_MAX && !errors.Is(err, ErrProtocol) {
					t.Fatalf("length %d refused without ErrProtocol: %v", h.Len, err)
				}
				return
			}
			if len(payload) != int(h.Len) || h.Len > XENSTORE_PAYLOAD_MAX {
				t.Fatalf("payload of %d bytes for length %d", len(payload), h.Len)
			}
			end := len(data) - r.Len()
			if got := appendMsg(nil, h, payload); !bytes.Equal(got, data[start:end]) {
				t.Fatalf("re-encoded % x, read % x", got, data[start:end])
			}
		}
	})
}

func FuzzMsgRoundTrip(f *testing.F) {
	f.Add(uint32(XS_WRITE), uint32(7), uint32(0), []byte("/a\x00value"))
	f.Add(uint32(XS_WATCH_EVENT), uint32(0), uint32(0), []byte{})
	f.Fuzz(func(t *testing.T, typ, req, tx uint32, payload []byte) {
		if len(payload) > XENSTORE_PAYLOAD_MAX {
			payload = payload[:XENSTORE_PAYLOAD_MAX]
		}
		in := SockMsg{Type: MsgType(typ), ReqID: req, TxID: tx, Len: uint32(len(payload))}
		h, got, err := readMsg(bytes.NewReader(appendMsg(nil, in, payload)))
		if err != nil || h != in || !bytes.Equal(got, payload) {
			t.Fatalf("round trip of %+v % x: %+v % x, %v", in, payload, h, got, err)
		}
	})
}

// FuzzReplyPayloads feeds the payload decoders what a peer could send.
func FuzzReplyPayloads(f *testing.F) {
	for _, s := range []string{
		"", "\x00", "a\x00b\x00", "a\x00b", "/local/domain/5/data\x00tok\x00",
		"ENOENT\x00", "E2BIG", "7\x00a\x00b\x00\x00", "7\x00\x00", "7\x00a\x00",
		"n0\x00r5\x00b65535\x00", "w4294967295\x00", "x1\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, n := range splitNames(b) {
			if n == "" || strings.IndexByte(n, 0) >= 0 {
				t.Fatalf("directory name %q", n)
			}
		}
		if path, token, err := parseWatchEvent(b); err == nil {
			if path == "" || strings.IndexByte(path, 0) >= 0 || strings.IndexByte(token, 0) >= 0 {
				t.Fatalf("watch event %q %q", path, token)
			}
			if got := cstrings(path, token); !bytes.HasPrefix(b, got) {
				t.Fatalf("watch event %q %q is not a prefix of % x", path, token, b)
			}
		}
		if errno, err := parseErrno(b); err == nil && (errno[0] != 'E' || len(errno) > 16) {
			t.Fatalf("errno %q", errno)
		}
		if p, err := parseDirPart(b); err == nil {
			if p.size > len(b) || (!p.last && p.size == 0) {
				t.Fatalf("directory part %+v of %d bytes", p, len(b))
			}
		}
		if perms, err := parsePerms(b); err == nil {
			for _, p := range perms {
				if q, err := ParsePerm(p.String()); err != nil || q != p {
					t.Fatalf("perm %v does not round-trip: %v, %v", p, q, err)
				}
			}
		}
		if p, err := ParsePerm(string(b)); err == nil {
			if q, err := ParsePerm(p.String()); err != nil || q != p {
				t.Fatalf("perm %q parsed as %v, which does not round-trip", b, p)
			}
		}
	})
}
