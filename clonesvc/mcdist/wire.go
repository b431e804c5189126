package mcdist

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Envelope constants (see the wire format in doc.go).
const (
	// Magic opens every mcdist packet.
	Magic = "SFMD"
	// Version is the wire format's major version; a packet of any other
	// version is dropped as malformed.
	Version = 1
	// HeaderSize is the length of the clear-text header, which is also the
	// AEAD's additional data.
	HeaderSize = 40
	// TagSize is the length of the AEAD tag that ends every packet.
	TagSize = 16
	// Overhead is what the envelope adds to a payload.
	Overhead = HeaderSize + TagSize
	// MaxPacket bounds a packet (a UDP datagram's payload).
	MaxPacket = 65507
	// PageSize is the size of a page: pages are numbered from 0 and page p
	// is the image's bytes [p*PageSize, (p+1)*PageSize).
	PageSize = 4096
)

// Type is a packet's kind.
type Type uint8

// Packet types.
const (
	// TypeRequest asks the server for pages (client → server, unicast).
	TypeRequest Type = 1
	// TypeFragment carries part of a page (server → group, or unicast).
	TypeFragment Type = 2
	// TypeZero says pages are all zeros (server → group, or unicast).
	TypeZero Type = 3
	// TypeReport is a receiver's rate report (client → server, unicast).
	TypeReport Type = 4
	// TypeNack refuses pages (server → requester, unicast).
	TypeNack Type = 5
)

func (t Type) String() string {
	switch t {
	case TypeRequest:
		return "request"
	case TypeFragment:
		return "fragment"
	case TypeZero:
		return "zero"
	case TypeReport:
		return "report"
	case TypeNack:
		return "nack"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Header is an envelope's clear-text header. Every field is authenticated.
type Header struct {
	Type Type
	// Length is the whole packet's length: header, payload and tag.
	Length uint16
	// Family is FamilyTag(FamilyID).
	Family [8]byte
	// Sender is the sending endpoint's random ID, new each time it starts.
	Sender uint64
	// Seq numbers the sender's packets from 1; it is also the AEAD nonce.
	Seq uint64
	// Time is the sender's clock at sending, in Unix milliseconds.
	Time int64
}

// FamilyTag is the 8-byte family field of every packet of the family
// familyID: the start of SHA-256 over a label and the ID. It is public
// (the ID is not secret) and only lets receivers drop other families'
// packets cheaply; the AEAD proves membership.
func FamilyTag(familyID string) [8]byte {
	h := sha256.Sum256([]byte("snowflock mcdist family\x00" + familyID))
	var t [8]byte
	copy(t[:], h[:8])
	return t
}

// errMalformed and errOtherFamily classify ParseHeader's failures.
var (
	errMalformed   = errors.New("malformed packet")
	errOtherFamily = errors.New("packet of another family")
)

// ParseHeader checks pkt's envelope (magic, version, type, length) and
// returns its header. It does not authenticate: see opener.
func ParseHeader(pkt []byte) (Header, error) {
	var h Header
	if len(pkt) < Overhead || len(pkt) > MaxPacket {
		return h, fmt.Errorf("%w: %d bytes", errMalformed, len(pkt))
	}
	if string(pkt[:4]) != Magic {
		return h, fmt.Errorf("%w: bad magic", errMalformed)
	}
	if pkt[4] != Version {
		return h, fmt.Errorf("%w: version %d, want %d", errMalformed, pkt[4], Version)
	}
	h.Type = Type(pkt[5])
	if h.Type < TypeRequest || h.Type > TypeNack {
		return h, fmt.Errorf("%w: unknown type %d", errMalformed, pkt[5])
	}
	h.Length = binary.BigEndian.Uint16(pkt[6:])
	if int(h.Length) != len(pkt) {
		return h, fmt.Errorf("%w: length field %d, datagram %d", errMalformed, h.Length, len(pkt))
	}
	copy(h.Family[:], pkt[8:16])
	h.Sender = binary.BigEndian.Uint64(pkt[16:])
	h.Seq = binary.BigEndian.Uint64(pkt[24:])
	h.Time = int64(binary.BigEndian.Uint64(pkt[32:]))
	if h.Sender == 0 || h.Seq == 0 {
		return h, fmt.Errorf("%w: zero sender or sequence", errMalformed)
	}
	return h, nil
}

// appendHeader appends h's encoding to b.
func appendHeader(b []byte, h Header) []byte {
	b = append(b, Magic...)
	b = append(b, Version, byte(h.Type))
	b = binary.BigEndian.AppendUint16(b, h.Length)
	b = append(b, h.Family[:]...)
	b = binary.BigEndian.AppendUint64(b, h.Sender)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	return binary.BigEndian.AppendUint64(b, uint64(h.Time))
}
