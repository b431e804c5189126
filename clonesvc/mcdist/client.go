package mcdist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snowflock/snowflock/clonesvc/descriptor"
	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// Client defaults.
const (
	DefaultTimeout    = 20 * time.Millisecond
	DefaultMaxBackoff = 320 * time.Millisecond
	DefaultFetchBound = 10 * time.Second
)

// Store keeps a host's pages. The memory tap implements it over a
// host-local file and bitmap. Both methods must be safe for concurrent
// use; Put must copy data, which is only valid during the call.
type Store interface {
	// Have reports whether page is stored.
	Have(page uint64) bool
	// Put stores a whole, verified page of PageSize bytes.
	Put(page uint64, data []byte) error
}

// ClientConfig configures a clone host's end of a family's distribution.
type ClientConfig struct {
	// FamilyID and Key identify the family, as in ServerConfig.
	FamilyID string
	Key      descriptor.Key
	// Server is the memory server's request address (ServerConfig.Listen).
	Server netip.AddrPort
	// Group is the family's multicast group and port.
	Group netip.AddrPort
	// Interface names the interface to join the group on ("": the
	// route's).
	Interface string
	// Listen is the local unicast address requests leave from and unicast
	// replies arrive at (default 0.0.0.0, any port).
	Listen netip.AddrPort
	// Store receives every valid page heard, asked for or not.
	Store Store
	// Timeout is how long a request waits before it is retried; each retry
	// doubles it up to MaxBackoff (defaults 20 ms, 320 ms).
	Timeout, MaxBackoff time.Duration
	// FetchBound bounds a Fetch: after it, Fetch fails with an error
	// wrapping errdefs.ErrUnavailable (default 10 s).
	FetchBound time.Duration
	// ReportInterval is how often the client reports its receive rate
	// (default 100 ms).
	ReportInterval time.Duration
	// MaxSkew is as in ServerConfig.
	MaxSkew time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Client fetches a family's pages on demand and keeps every page it hears
// on the family's group.
type Client struct {
	cfg   ClientConfig
	codec *codec
	log   *slog.Logger
	asm   *reassembler

	started atomic.Bool
	ready   chan struct{} // closed once Run has its sockets
	stopped chan struct{} // closed when Run returns
	conn    *net.UDPConn  // unicast; set before ready is closed
	reqs    chan pageRequest

	mu      sync.Mutex
	flights map[uint64]*flight
	stream  streamCount

	drops dropCounters
	net   traffic
	st    struct {
		requested, retries, received, unrequested, multicast, unicast, duplicates, storeErrors, failed atomic.Uint64
	}
}

// streamCount tracks the server's multicast stream numbers for the rate
// report. Guarded by Client.mu.
type streamCount struct {
	sender    uint64
	top, base uint32
	packets   uint32
	bytes     uint64
}

// NewClient checks cfg and fills its defaults.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := clientDefaults(&cfg); err != nil {
		return nil, fmt.Errorf("mcdist: client: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	c, err := newCodec(cfg.FamilyID, cfg.Key, cfg.MaxSkew)
	if err != nil {
		return nil, err
	}
	return &Client{
		cfg: cfg, codec: c, log: cfg.Logger, asm: newReassembler(),
		ready: make(chan struct{}), stopped: make(chan struct{}),
		reqs: make(chan pageRequest, 4096), flights: map[uint64]*flight{},
	}, nil
}

func clientDefaults(cfg *ClientConfig) error {
	switch {
	case cfg.Store == nil:
		return errors.New("no store")
	case !cfg.Server.IsValid():
		return errors.New("no server address")
	}
	if err := checkGroup(cfg.Group); err != nil {
		return err
	}
	setDefault(&cfg.Listen, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	setDefault(&cfg.Timeout, DefaultTimeout)
	setDefault(&cfg.MaxBackoff, max(DefaultMaxBackoff, cfg.Timeout))
	setDefault(&cfg.FetchBound, DefaultFetchBound)
	setDefault(&cfg.ReportInterval, DefaultReportInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

// Run joins the group and stores every valid page heard until ctx is
// done, then returns nil; Fetch works while Run runs. A Client runs once.
func (c *Client) Run(ctx context.Context) error {
	if c.started.Swap(true) {
		return fmt.Errorf("mcdist: %w: client already ran", errdefs.ErrInvalidArgument)
	}
	defer close(c.stopped)
	ifi, err := lookupInterface(c.cfg.Interface)
	if err != nil {
		return err
	}
	group, err := listenGroup(c.cfg.Group, ifi)
	if err != nil {
		return err
	}
	defer group.Close()
	c.conn, err = listenUnicast(c.cfg.Listen, ifi, 1)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	close(c.ready)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		readLoop(ctx, group, c.log, &c.net, func(pkt []byte, _ netip.AddrPort) { c.handle(pkt, true) })
	})
	wg.Go(func() {
		readLoop(ctx, c.conn, c.log, &c.net, func(pkt []byte, _ netip.AddrPort) { c.handle(pkt, false) })
	})
	wg.Go(func() { c.requestLoop(ctx) })
	wg.Go(func() { c.reportLoop(ctx) })
	<-ctx.Done()
	group.Close()
	c.conn.Close()
	cancel()
	wg.Wait()
	return nil
}

// handle opens one packet and acts on it.
func (c *Client) handle(pkt []byte, multicast bool) {
	h, payload, reason, err := c.codec.open(pkt)
	if reason != dropNone {
		c.drops.count(reason)
		c.log.Debug("mcdist: client dropped packet", "err", err)
		return
	}
	switch h.Type {
	case TypeFragment:
		f, err := ParseFragment(payload)
		if err != nil {
			c.drops.count(dropMalformed)
			return
		}
		c.countStream(h.Sender, f.Stream, len(f.Data))
		if c.cfg.Store.Have(f.Page) {
			if f.Index == 0 {
				c.st.duplicates.Add(1)
			}
			return
		}
		if page, ok := c.asm.add(f, time.Now()); ok {
			c.deliver(f.Page, page, multicast)
		}
	case TypeZero, TypeNack:
		l, err := ParsePageList(payload)
		if err != nil {
			c.drops.count(dropMalformed)
			return
		}
		if h.Type == TypeNack {
			for _, p := range l.Pages {
				c.finish(p, fmt.Errorf("mcdist: page %d: %w: past the image's end", p, errdefs.ErrInvalidArgument))
			}
			return
		}
		c.countStream(h.Sender, l.Stream, 0)
		zero := make([]byte, PageSize)
		for _, p := range l.Pages {
			if !c.cfg.Store.Have(p) {
				c.deliver(p, zero, multicast)
			}
		}
	default:
		c.drops.count(dropMalformed)
	}
}

// deliver stores a whole page and completes its fetch.
func (c *Client) deliver(page uint64, data []byte, multicast bool) {
	c.asm.drop(page)
	if err := c.cfg.Store.Put(page, data); err != nil {
		c.st.storeErrors.Add(1)
		c.log.Warn("mcdist: store page", "page", page, "err", err)
		return
	}
	c.st.received.Add(1)
	if multicast {
		c.st.multicast.Add(1)
	} else {
		c.st.unicast.Add(1)
	}
	if !c.finish(page, nil) {
		c.st.unrequested.Add(1)
	}
}

// countStream counts a packet for the rate report; stream is its
// multicast number (0: unicast, not counted as expected).
func (c *Client) countStream(sender uint64, stream uint32, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.stream
	s.bytes += uint64(bytes)
	if stream == 0 {
		return
	}
	if s.sender != sender { // the first packet of this server
		s.sender, s.top, s.base = sender, stream, stream-1
	}
	s.packets++
	if int32(stream-s.top) > 0 {
		s.top = stream
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{
		PagesRequested:   c.st.requested.Load(),
		Retries:          c.st.retries.Load(),
		PagesReceived:    c.st.received.Load(),
		PagesUnrequested: c.st.unrequested.Load(),
		PagesMulticast:   c.st.multicast.Load(),
		PagesUnicast:     c.st.unicast.Load(),
		DuplicatePages:   c.st.duplicates.Load(),
		Incomplete:       c.asm.expiredCount(),
		StoreErrors:      c.st.storeErrors.Load(),
		FetchesFailed:    c.st.failed.Load(),
		PacketsSent:      c.net.packetsSent.Load(),
		BytesSent:        c.net.bytesSent.Load(),
		PacketsReceived:  c.net.packetsReceived.Load(),
		BytesReceived:    c.net.bytesReceived.Load(),
		Dropped:          c.drops.snapshot(),
	}
}
