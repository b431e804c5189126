package mcdist

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snowflock/snowflock/clonesvc/descriptor"
	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// Key derivation labels (HKDF-SHA-256, see doc.go).
const (
	hkdfSalt      = "snowflock mcdist v1"
	hkdfPacketKey = "packet key\x00"
)

// maxPeers bounds the senders a codec remembers; the least recently heard
// is forgotten first.
const maxPeers = 1024

// DefaultMaxSkew is how far a packet's time may be from the receiver's
// clock before the packet is stale.
const DefaultMaxSkew = 2 * time.Minute

// dropReason says why a packet was dropped.
type dropReason int

const (
	dropNone dropReason = iota
	dropMalformed
	dropOtherFamily
	dropForged
	dropStale
)

var (
	errForged = errors.New("packet fails authentication")
	errStale  = errors.New("stale or replayed packet")
)

// codec seals this endpoint's packets and opens its peers': one per Server
// or Client, safe for concurrent use.
type codec struct {
	familyID string
	family   [8]byte
	prk      []byte
	sender   uint64
	seq      atomic.Uint64
	aead     cipher.AEAD // this sender's key
	maxSkew  time.Duration

	mu    sync.Mutex
	peers map[uint64]*peer
}

// peer is what a codec remembers of one sender.
type peer struct {
	aead cipher.AEAD
	win  window
	seen time.Time
}

// newCodec derives the family's keys. maxSkew 0 means DefaultMaxSkew; a
// negative maxSkew turns the time check off.
func newCodec(familyID string, key descriptor.Key, maxSkew time.Duration) (*codec, error) {
	if familyID == "" {
		return nil, fmt.Errorf("mcdist: %w: empty family ID", errdefs.ErrInvalidArgument)
	}
	if key.IsZero() {
		return nil, fmt.Errorf("mcdist: %w: family key is unset", errdefs.ErrInvalidArgument)
	}
	if maxSkew == 0 {
		maxSkew = DefaultMaxSkew
	}
	prk, err := hkdf.Extract(sha256.New, key[:], []byte(hkdfSalt))
	if err != nil {
		return nil, fmt.Errorf("mcdist: derive family key: %w", err)
	}
	c := &codec{familyID: familyID, family: FamilyTag(familyID), prk: prk, maxSkew: maxSkew, peers: map[uint64]*peer{}}
	for c.sender == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
		c.sender = binary.BigEndian.Uint64(b[:])
	}
	if c.aead, err = c.senderKey(c.sender); err != nil {
		return nil, err
	}
	return c, nil
}

// senderKey derives sender's AES-256-GCM key from the family key.
func (c *codec) senderKey(sender uint64) (cipher.AEAD, error) {
	info := binary.BigEndian.AppendUint64([]byte(hkdfPacketKey), sender)
	k, err := hkdf.Expand(sha256.New, c.prk, string(info)+c.familyID, 32)
	if err != nil {
		return nil, fmt.Errorf("mcdist: derive packet key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("mcdist: packet key: %w", err)
	}
	return cipher.NewGCM(block)
}

// nonce is the AEAD nonce of a sender's packet seq: 4 zero bytes, then
// seq. Every sender has its own key, so (key, nonce) never repeats.
func nonce(seq uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n[:]
}

// seal appends to dst a packet of type typ carrying payload.
func (c *codec) seal(dst []byte, typ Type, payload []byte) ([]byte, error) {
	n := Overhead + len(payload)
	if n > MaxPacket {
		return dst, fmt.Errorf("mcdist: %w: %d-byte packet", errdefs.ErrInvalidArgument, n)
	}
	h := Header{Type: typ, Length: uint16(n), Family: c.family, Sender: c.sender, Seq: c.seq.Add(1), Time: time.Now().UnixMilli()}
	start := len(dst)
	dst = appendHeader(dst, h)
	return c.aead.Seal(dst, nonce(h.Seq), payload, dst[start:]), nil
}

// open checks, authenticates and decrypts pkt, returning its header and
// payload (in a new slice), or why it was dropped.
func (c *codec) open(pkt []byte) (Header, []byte, dropReason, error) {
	h, err := ParseHeader(pkt)
	if err != nil {
		return h, nil, dropMalformed, err
	}
	if h.Family != c.family {
		return h, nil, dropOtherFamily, errOtherFamily
	}
	if h.Sender == c.sender {
		return h, nil, dropStale, fmt.Errorf("%w: our own packet", errStale)
	}
	c.mu.Lock()
	p := c.peers[h.Sender]
	var aead cipher.AEAD
	if p != nil {
		aead = p.aead
		if p.win.seen(h.Seq) {
			c.mu.Unlock()
			return h, nil, dropStale, fmt.Errorf("%w: sequence %d", errStale, h.Seq)
		}
	}
	c.mu.Unlock()
	if aead == nil {
		if aead, err = c.senderKey(h.Sender); err != nil {
			return h, nil, dropForged, err
		}
	}
	payload, err := aead.Open(nil, nonce(h.Seq), pkt[HeaderSize:], pkt[:HeaderSize])
	if err != nil {
		return h, nil, dropForged, errForged
	}
	now := time.Now()
	if c.maxSkew > 0 {
		if d := now.Sub(time.UnixMilli(h.Time)); d > c.maxSkew || d < -c.maxSkew {
			return h, nil, dropStale, fmt.Errorf("%w: sent %v from now", errStale, -d)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p = c.peers[h.Sender]; p == nil {
		c.evictLocked()
		p = &peer{aead: aead}
		c.peers[h.Sender] = p
	}
	if !p.win.mark(h.Seq) {
		return h, nil, dropStale, fmt.Errorf("%w: sequence %d", errStale, h.Seq)
	}
	p.seen = now
	return h, payload, dropNone, nil
}

// evictLocked forgets the least recently heard peer when the codec
// remembers maxPeers. Preconditions: c.mu is held.
func (c *codec) evictLocked() {
	if len(c.peers) < maxPeers {
		return
	}
	var oldest uint64
	var at time.Time
	for id, p := range c.peers {
		if oldest == 0 || p.seen.Before(at) {
			oldest, at = id, p.seen
		}
	}
	delete(c.peers, oldest)
}
