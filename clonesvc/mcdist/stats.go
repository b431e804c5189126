package mcdist

import "sync/atomic"

// Drops counts packets dropped unread, by reason.
type Drops struct {
	// Forged: the AEAD tag did not verify (wrong key, tampered bytes).
	Forged uint64
	// Stale: replayed, too old for the sequence window, our own, or sent
	// too far (MaxSkew) from the receiver's clock.
	Stale uint64
	// OtherFamily: the family tag is not ours.
	OtherFamily uint64
	// Malformed: bad envelope (magic, version, type, length) or payload,
	// or a type this end never receives.
	Malformed uint64
}

// ServerStats are a Server's counters since it was made.
type ServerStats struct {
	// PagesRequested counts pages named in valid requests.
	PagesRequested uint64
	// PagesServed counts pages sent (multicast or unicast), zero pages
	// included.
	PagesServed uint64
	// PagesMulticast and PagesUnicast split PagesServed by route.
	PagesMulticast uint64
	PagesUnicast   uint64
	// ZeroReplies counts pages answered with a zero message.
	ZeroReplies uint64
	// DuplicatesSuppressed counts requested pages not sent again because
	// they were queued or sent to the requester within DupWindow.
	DuplicatesSuppressed uint64
	// Retries counts pages named in requests flagged as retries.
	Retries uint64
	// Nacks counts pages refused (past the image's end).
	Nacks uint64
	// QueueFull counts requested pages dropped because the send queue was
	// full (the client retries).
	QueueFull uint64
	// Reports counts rate reports received.
	Reports uint64
	// PacketsSent, BytesSent, PacketsReceived and BytesReceived count
	// datagrams and their UDP payload bytes.
	PacketsSent, BytesSent         uint64
	PacketsReceived, BytesReceived uint64
	// RateLimit is the pacer's current limit in bytes per second.
	RateLimit uint64
	Dropped   Drops
}

// ClientStats are a Client's counters since it was made.
type ClientStats struct {
	// PagesRequested counts pages named in requests sent (retries too).
	PagesRequested uint64
	// Retries counts pages asked for again after a timeout.
	Retries uint64
	// PagesReceived counts whole, verified pages (and zero pages) stored.
	PagesReceived uint64
	// PagesUnrequested counts stored pages this client never asked for.
	PagesUnrequested uint64
	// PagesMulticast and PagesUnicast split PagesReceived by route.
	PagesMulticast uint64
	PagesUnicast   uint64
	// DuplicatePages counts whole pages heard that the store already had.
	DuplicatePages uint64
	// Incomplete counts pages whose fragments never all arrived.
	Incomplete uint64
	// StoreErrors counts failed Store.Put calls.
	StoreErrors uint64
	// FetchesFailed counts Fetch calls that gave up (ErrUnavailable).
	FetchesFailed uint64
	// PacketsSent, BytesSent, PacketsReceived and BytesReceived count
	// datagrams and their UDP payload bytes.
	PacketsSent, BytesSent         uint64
	PacketsReceived, BytesReceived uint64
	Dropped                        Drops
}

// dropCounters are Drops, updated atomically.
type dropCounters struct {
	forged, stale, otherFamily, malformed atomic.Uint64
}

func (d *dropCounters) count(r dropReason) {
	switch r {
	case dropForged:
		d.forged.Add(1)
	case dropStale:
		d.stale.Add(1)
	case dropOtherFamily:
		d.otherFamily.Add(1)
	case dropMalformed:
		d.malformed.Add(1)
	}
}

func (d *dropCounters) snapshot() Drops {
	return Drops{Forged: d.forged.Load(), Stale: d.stale.Load(), OtherFamily: d.otherFamily.Load(), Malformed: d.malformed.Load()}
}

// traffic counts datagrams both ways, updated atomically.
type traffic struct {
	packetsSent, bytesSent, packetsReceived, bytesReceived atomic.Uint64
}

func (t *traffic) sent(n int) {
	t.packetsSent.Add(1)
	t.bytesSent.Add(uint64(n))
}

func (t *traffic) received(n int) {
	t.packetsReceived.Add(1)
	t.bytesReceived.Add(uint64(n))
}
