package guestproto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/allocator"
)

func frame(t testing.TB, m *Message) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRoundTrip(t *testing.T) {
	in := []*Message{
		{ID: 1, Op: OpRequestTicket, N: 4},
		{ID: 1, Op: OpClone, Reply: true, CloneID: 3, Identity: &Identity{Hostname: "c3", Seed: []byte{1, 2, 3}}},
		{ID: 9, Op: OpJoin, Reply: true, Exits: []Exit{{CloneID: 1, Result: []byte("42")}, {CloneID: 2, Killed: true, Reason: "vm died"}}},
		{ID: 2, Reply: true, Error: &Error{Code: "not_found", Message: "no ticket t-1"}},
	}
	var stream bytes.Buffer
	for _, m := range in {
		stream.Write(frame(t, m))
	}
	r := NewReader(&stream)
	for _, want := range in {
		got, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("read %+v, want %+v", got, want)
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
}

func TestReadRefusesMalformed(t *testing.T) {
	good := frame(t, &Message{ID: 1, Op: OpKill, Ticket: "t"})
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"magic":      mutate(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version":    mutate(func(b []byte) []byte { b[3] = Version + 1; return b }),
		"checksum":   mutate(func(b []byte) []byte { b[len(b)-2] ^= 1; return b }),
		"too long":   mutate(func(b []byte) []byte { binary.BigEndian.PutUint32(b[4:], MaxPayload+1); return b }),
		"truncated":  good[:len(good)-1],
		"header":     good[:5],
		"unknown op": frame(t, &Message{ID: 1, Op: "reboot"}),
		"result":     frame(t, &Message{ID: 1, Op: OpExit, Result: make([]byte, MaxResult+1)}),
	}
	for name, b := range cases {
		if _, err := NewReader(bytes.NewReader(b)).Read(); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: %v, want ErrFrame", name, err)
		}
	}
}

func TestWriteRefusesOversized(t *testing.T) {
	err := Write(io.Discard, &Message{ID: 1, Reply: true, Output: make([]byte, MaxPayload)})
	if !errors.Is(err, ErrFrame) {
		t.Fatalf("oversized write: %v, want ErrFrame", err)
	}
}

func TestResyncSkipsToNextFrame(t *testing.T) {
	next := &Message{ID: 7, Op: OpWhoAmI}
	bad := frame(t, &Message{ID: 1, Op: OpKill})
	bad[len(bad)-1] ^= 0xff
	stream := bytes.NewReader(append(append([]byte("garbage SF"), bad...), frame(t, next)...))
	r := NewReader(stream)
	if _, err := r.Read(); !errors.Is(err, ErrFrame) {
		t.Fatalf("first read: %v, want ErrFrame", err)
	}
	for {
		if err := r.Resync(); err != nil {
			t.Fatalf("resync: %v", err)
		}
		m, err := r.Read()
		if err == nil {
			if !reflect.DeepEqual(m, next) {
				t.Fatalf("after resync read %+v, want %+v", m, next)
			}
			break
		}
		if !errors.Is(err, ErrFrame) {
			t.Fatalf("read after resync: %v", err)
		}
	}
	if err := r.Resync(); err != io.EOF {
		t.Errorf("resync at end: %v, want io.EOF", err)
	}
}

func TestErrorMatchesSentinel(t *testing.T) {
	for code, want := range map[string]error{
		"not_found":      ErrNotFound,
		"none_available": allocator.ErrNoneAvailable,
		"bogus":          ErrUnavailable,
	} {
		e := NewError(code, errors.New("x"))
		if !errors.Is(e, want) {
			t.Errorf("code %s does not match %v", code, want)
		}
		if CodeOf(e, nil) != e.Code {
			t.Errorf("CodeOf(%s) = %s", e.Code, CodeOf(e, nil))
		}
	}
	if !strings.Contains(NewError("timeout", errors.New("late")).String(), "timeout: late") {
		t.Error("String lacks code and message")
	}
}

// FuzzRead: no input makes the reader panic, and whatever it accepts
// re-encodes into frames that read back equal.
func FuzzRead(f *testing.F) {
	for _, m := range []*Message{
		{ID: 1, Op: OpHello},
		{ID: 2, Op: OpClone, Reply: true, CloneID: 1, Identity: &Identity{Hostname: "h", Seed: []byte{9}}},
		{ID: 3, Op: OpExec, Args: []string{"sh", "-c", "true"}},
		{ID: 4, Op: OpJoin, Reply: true, Exits: []Exit{{CloneID: 1, Result: []byte("r")}}},
	} {
		f.Add(frame(f, m))
	}
	f.Add([]byte("SFG\x01\x00\x00\x00\x02\x00\x00\x00\x00{}"))
	f.Add([]byte(`{"id":5,"op":"exit","result":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The input both as a raw stream and as one payload in a valid
		// envelope, so that the JSON and validation stages get fuzzed too.
		enveloped := make([]byte, headerSize, headerSize+len(b))
		copy(enveloped, magic[:])
		enveloped[3] = Version
		binary.BigEndian.PutUint32(enveloped[4:], uint32(len(b)))
		binary.BigEndian.PutUint32(enveloped[8:], crc32.Checksum(b, castagnoli))
		r := NewReader(io.MultiReader(bytes.NewReader(b), bytes.NewReader(append(enveloped, b...))))
		for {
			m, err := r.Read()
			if err != nil {
				if errors.Is(err, ErrFrame) && r.Resync() == nil {
					continue
				}
				return
			}
			var out bytes.Buffer
			if err := Write(&out, m); err != nil {
				t.Fatalf("accepted message %+v does not re-encode: %v", m, err)
			}
			again, err := NewReader(&out).Read()
			if err != nil {
				t.Fatalf("re-encoded message does not read back: %v", err)
			}
			// Equal on the wire: omitempty makes an empty and a nil
			// slice the same message.
			want, _ := json.Marshal(m)
			if got, _ := json.Marshal(again); !bytes.Equal(got, want) {
				t.Fatalf("read back %s, want %s", got, want)
			}
		}
	})
}
