package mcdist

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snowflock/snowflock/clonesvc/descriptor"
	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// Server defaults.
const (
	DefaultMaxDatagram     = 1400
	MinDatagram            = 256
	DefaultDupWindow       = 10 * time.Millisecond
	DefaultUnicastAfter    = 2
	DefaultEndGameFraction = 0.9
	DefaultReportInterval  = 100 * time.Millisecond
	DefaultQueueLimit      = 1 << 16
)

// ServerConfig configures a memory server for one clone family.
type ServerConfig struct {
	// FamilyID and Key identify the family (descriptor.FamilyID and
	// FamilyKey): only holders of Key can ask for or read pages.
	FamilyID string
	Key      descriptor.Key
	// Image is the family's frozen memory image; page p is at p*PageSize.
	// A short last page reads as zero-padded.
	Image io.ReaderAt
	// Pages is the number of pages in Image.
	Pages uint64
	// Zero marks pages that are all zeros (bit p%8 of byte p/8, as in
	// descriptor.Region.Zero); they are answered with a zero message.
	Zero []byte
	// Listen is the UDP address requests arrive at.
	Listen netip.AddrPort
	// Conn, if set, is a socket already bound to Listen that Serve uses
	// (and closes) instead of binding Listen itself: a caller that had
	// the kernel pick the port keeps it, where closing and binding again
	// would let another socket take it meanwhile.
	Conn *net.UDPConn
	// Group is the family's IPv4 multicast group and port.
	Group netip.AddrPort
	// Interface names the interface to multicast on ("": the route's).
	Interface string
	// MulticastTTL defaults to 1 (the local link).
	MulticastTTL int
	// MaxDatagram bounds a packet's UDP payload (default 1400, at least
	// MinDatagram): pages travel in as many fragments as that needs.
	MaxDatagram int
	// DupWindow: a page sent within this window is not sent again for a
	// request it already answers (default 10 ms).
	DupWindow time.Duration
	// UnicastAfter: a page already multicast this many times is sent to
	// its requester alone (default 2).
	UnicastAfter int
	// EndGameFraction: once this fraction of the non-zero pages went out
	// and most requests are retries, replies go unicast (default 0.9).
	EndGameFraction float64
	// Unicast turns multicast off: every reply goes to its requester
	// alone (the baseline mcdist is measured against).
	Unicast bool
	// MaxRate and MinRate bound the pacer in bytes per second (defaults
	// DefaultMaxRate, DefaultMinRate); LossThreshold is the loss above
	// which a receiver holds the rate down (default 0.02).
	MaxRate, MinRate int64
	LossThreshold    float64
	// ReportInterval is the clients' report interval (default 100 ms): a
	// receiver silent for 3 intervals no longer paces the server.
	ReportInterval time.Duration
	// MaxSkew is how far a packet's time may be from this clock (default
	// DefaultMaxSkew; negative: unchecked).
	MaxSkew time.Duration
	// QueueLimit bounds the pages waiting to be sent (default 65536).
	QueueLimit int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server serves a clone family's frozen memory image: it answers page
// requests by multicasting the page to the family's group (unicast in the
// end game), pacing to its receivers' reported rates.
type Server struct {
	cfg   ServerConfig
	codec *codec
	pacer *pacer
	log   *slog.Logger
	frags int
	ifi   *net.Interface

	started   atomic.Bool
	listening chan struct{} // closed once Serve has its socket
	wake      chan struct{}

	mu       sync.Mutex
	queue    []sendItem
	queued   map[pageDest]struct{}
	lastSent map[pageDest]time.Time
	pruned   time.Time        // when lastSent was last pruned
	mcast    map[uint64]uint8 // page → times multicast (saturating)
	sent     map[uint64]struct{}
	nonZero  uint64
	retryAvg float64 // moving average of the retry flag over requested pages

	drops dropCounters
	net   traffic
	st    struct {
		requested, served, multicast, unicast, zero, suppressed, retries, nacks, queueFull, reports atomic.Uint64
	}
}

// pageDest is a page and where it goes (the zero AddrPort: the group).
type pageDest struct {
	page uint64
	to   netip.AddrPort
}

// sendItem is a queued reply.
type sendItem struct {
	pageDest
	zero bool
}

// NewServer checks cfg and fills its defaults.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := serverDefaults(&cfg); err != nil {
		return nil, fmt.Errorf("mcdist: server: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	c, err := newCodec(cfg.FamilyID, cfg.Key, cfg.MaxSkew)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, codec: c, log: cfg.Logger, frags: fragmentCount(cfg.MaxDatagram),
		pacer: newPacer(float64(cfg.MinRate), float64(cfg.MaxRate), cfg.LossThreshold, reportTTL*cfg.ReportInterval),
		wake:  make(chan struct{}, 1), listening: make(chan struct{}),
		queued: map[pageDest]struct{}{}, lastSent: map[pageDest]time.Time{},
		mcast: map[uint64]uint8{}, sent: map[uint64]struct{}{},
	}
	s.nonZero = cfg.Pages - zeroCount(cfg.Zero, cfg.Pages)
	return s, nil
}

func serverDefaults(cfg *ServerConfig) error {
	switch {
	case cfg.Image == nil:
		return errors.New("no image")
	case cfg.Pages == 0:
		return errors.New("no pages")
	case cfg.Zero != nil && uint64(len(cfg.Zero)) != (cfg.Pages+7)/8:
		return fmt.Errorf("zero bitmap is %d bytes for %d pages", len(cfg.Zero), cfg.Pages)
	case !cfg.Listen.IsValid():
		return errors.New("no listen address")
	case cfg.MaxDatagram != 0 && (cfg.MaxDatagram < MinDatagram || cfg.MaxDatagram > MaxPacket):
		return fmt.Errorf("max datagram %d outside [%d, %d]", cfg.MaxDatagram, MinDatagram, MaxPacket)
	case cfg.EndGameFraction < 0 || cfg.EndGameFraction > 1:
		return fmt.Errorf("end-game fraction %v outside [0, 1]", cfg.EndGameFraction)
	case cfg.MinRate < 0 || cfg.MaxRate < 0 || (cfg.MaxRate > 0 && cfg.MinRate > cfg.MaxRate):
		return fmt.Errorf("rates [%d, %d] out of order", cfg.MinRate, cfg.MaxRate)
	}
	if err := checkGroup(cfg.Group); err != nil && !cfg.Unicast {
		return err
	}
	setDefault(&cfg.MulticastTTL, 1)
	setDefault(&cfg.MaxDatagram, DefaultMaxDatagram)
	setDefault(&cfg.DupWindow, DefaultDupWindow)
	setDefault(&cfg.UnicastAfter, DefaultUnicastAfter)
	setDefault(&cfg.EndGameFraction, DefaultEndGameFraction)
	setDefault(&cfg.MaxRate, DefaultMaxRate)
	setDefault(&cfg.MinRate, min(DefaultMinRate, cfg.MaxRate))
	setDefault(&cfg.LossThreshold, DefaultLossThreshold)
	setDefault(&cfg.ReportInterval, DefaultReportInterval)
	setDefault(&cfg.QueueLimit, DefaultQueueLimit)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

// setDefault sets *v to def when it is the zero value.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// isZeroPage reads bit p of a zero-page bitmap.
func isZeroPage(zero []byte, p uint64) bool {
	return p/8 < uint64(len(zero)) && zero[p/8]&(1<<(p%8)) != 0
}

func zeroCount(zero []byte, pages uint64) uint64 {
	var n uint64
	for p := range pages {
		if isZeroPage(zero, p) {
			n++
		}
	}
	return n
}

// Serve answers requests until ctx is done, then returns nil; it returns
// an error if its socket cannot be opened. A Server serves once.
func (s *Server) Serve(ctx context.Context) error {
	if s.started.Swap(true) {
		return fmt.Errorf("mcdist: %w: server already served", errdefs.ErrInvalidArgument)
	}
	ifi, err := lookupInterface(s.cfg.Interface)
	if err != nil {
		if s.cfg.Conn != nil {
			s.cfg.Conn.Close()
		}
		return err
	}
	s.ifi = ifi
	var conn *net.UDPConn
	if s.cfg.Conn != nil {
		conn, err = prepareUnicast(s.cfg.Conn, ifi, s.cfg.MulticastTTL)
	} else {
		conn, err = listenUnicast(s.cfg.Listen, ifi, s.cfg.MulticastTTL)
	}
	if err != nil {
		return err
	}
	close(s.listening)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.sendLoop(ctx, conn) })
	wg.Go(func() {
		readLoop(ctx, conn, s.log, &s.net, func(pkt []byte, from netip.AddrPort) { s.handle(ctx, conn, pkt, from) })
	})
	<-ctx.Done()
	conn.Close()
	cancel()
	wg.Wait()
	return nil
}

// handle acts on one datagram: a request or a rate report.
func (s *Server) handle(ctx context.Context, conn *net.UDPConn, pkt []byte, from netip.AddrPort) {
	h, payload, reason, err := s.codec.open(pkt)
	if reason != dropNone {
		s.drops.count(reason)
		s.log.Debug("mcdist: server dropped packet", "from", from, "err", err)
		return
	}
	switch h.Type {
	case TypeRequest:
		req, err := ParseRequest(payload)
		if err != nil {
			s.drops.count(dropMalformed)
			return
		}
		s.handleRequest(ctx, conn, from, req)
	case TypeReport:
		r, err := ParseReport(payload)
		if err != nil {
			s.drops.count(dropMalformed)
			return
		}
		s.st.reports.Add(1)
		s.pacer.report(h.Sender, r, time.Now())
	default:
		s.drops.count(dropMalformed)
	}
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		PagesRequested:       s.st.requested.Load(),
		PagesServed:          s.st.served.Load(),
		PagesMulticast:       s.st.multicast.Load(),
		PagesUnicast:         s.st.unicast.Load(),
		ZeroReplies:          s.st.zero.Load(),
		DuplicatesSuppressed: s.st.suppressed.Load(),
		Retries:              s.st.retries.Load(),
		Nacks:                s.st.nacks.Load(),
		QueueFull:            s.st.queueFull.Load(),
		Reports:              s.st.reports.Load(),
		PacketsSent:          s.net.packetsSent.Load(),
		BytesSent:            s.net.bytesSent.Load(),
		PacketsReceived:      s.net.packetsReceived.Load(),
		BytesReceived:        s.net.bytesReceived.Load(),
		RateLimit:            uint64(s.pacer.limit()),
		Dropped:              s.drops.snapshot(),
	}
}
