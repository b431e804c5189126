package mcdist

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"
)

// retryAvgWeight is the weight of each requested page in the moving
// average of retries that, with EndGameFraction, starts the end game.
const retryAvgWeight = 0.05

// handleRequest queues the pages of req (in order) unless each is already
// queued or was sent within DupWindow to where this reply would go, and
// refuses pages past the image's end.
func (s *Server) handleRequest(ctx context.Context, conn *net.UDPConn, from netip.AddrPort, req Request) {
	n := uint64(len(req.Pages))
	s.st.requested.Add(n)
	if req.Retry {
		s.st.retries.Add(n)
	}
	var refused []uint64
	now := time.Now()
	s.mu.Lock()
	queuedAny := false
	for _, p := range req.Pages {
		retry := 0.0
		if req.Retry {
			retry = 1
		}
		s.retryAvg += retryAvgWeight * (retry - s.retryAvg)
		if p >= s.cfg.Pages {
			refused = append(refused, p)
			continue
		}
		group, alone := pageDest{page: p}, pageDest{page: p, to: from}
		if s.recentLocked(group, now) || s.recentLocked(alone, now) {
			s.st.suppressed.Add(1)
			continue
		}
		if len(s.queue) >= s.cfg.QueueLimit {
			s.st.queueFull.Add(1)
			continue
		}
		d := group
		if s.cfg.Unicast || int(s.mcast[p]) >= s.cfg.UnicastAfter || s.endGameLocked() {
			d = alone
		}
		s.queue = append(s.queue, sendItem{pageDest: d, zero: isZeroPage(s.cfg.Zero, p)})
		s.queued[d] = struct{}{}
		queuedAny = true
	}
	s.mu.Unlock()
	if queuedAny {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	if len(refused) > 0 {
		s.st.nacks.Add(uint64(len(refused)))
		s.send(ctx, conn, from, TypeNack, AppendPageList(nil, PageList{Pages: refused}))
	}
}

// recentLocked reports whether d is queued or was sent within DupWindow.
// Preconditions: s.mu is held.
func (s *Server) recentLocked(d pageDest, now time.Time) bool {
	if _, ok := s.queued[d]; ok {
		return true
	}
	at, ok := s.lastSent[d]
	return ok && now.Sub(at) < s.cfg.DupWindow
}

// endGameLocked reports whether most pages are out and requests are
// mostly retries. Preconditions: s.mu is held.
func (s *Server) endGameLocked() bool {
	return float64(len(s.sent)) >= s.cfg.EndGameFraction*float64(s.nonZero) && s.retryAvg >= 0.5
}

// next pops the queue's head, recording it as sent now.
func (s *Server) next() (sendItem, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return sendItem{}, false
	}
	it := s.queue[0]
	s.queue[0] = sendItem{}
	s.queue = s.queue[1:]
	if len(s.queue) == 0 {
		s.queue = nil // let the backing array go
	}
	delete(s.queued, it.pageDest)
	now := time.Now()
	if now.Sub(s.pruned) > time.Second {
		s.pruneLocked(now)
	}
	s.lastSent[it.pageDest] = now
	if !it.to.IsValid() && s.mcast[it.page] < 255 {
		s.mcast[it.page]++
	}
	if !it.zero {
		s.sent[it.page] = struct{}{}
	}
	return it, true
}

// pruneLocked forgets sends older than DupWindow. Preconditions: s.mu is
// held.
func (s *Server) pruneLocked(now time.Time) {
	s.pruned = now
	for d, at := range s.lastSent {
		if now.Sub(at) >= s.cfg.DupWindow {
			delete(s.lastSent, d)
		}
	}
}

// sendLoop sends queued pages, paced, until ctx is done.
func (s *Server) sendLoop(ctx context.Context, conn *net.UDPConn) {
	page := make([]byte, PageSize)
	var stream uint32
	for {
		it, ok := s.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			}
			continue
		}
		to := it.to
		if !to.IsValid() {
			to = s.cfg.Group
		}
		var err error
		if it.zero {
			err = s.sendZero(ctx, conn, it, to, &stream)
		} else {
			err = s.sendPage(ctx, conn, it, to, page, &stream)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("mcdist: send page", "page", it.page, "err", err)
			continue
		}
		s.st.served.Add(1)
		if it.to.IsValid() {
			s.st.unicast.Add(1)
		} else {
			s.st.multicast.Add(1)
		}
	}
}

// nextStream returns the stream number of a packet to it: the next
// multicast number, or 0 for unicast.
func nextStream(it sendItem, stream *uint32) uint32 {
	if it.to.IsValid() {
		return 0
	}
	*stream++
	if *stream == 0 {
		*stream = 1
	}
	return *stream
}

func (s *Server) sendZero(ctx context.Context, conn *net.UDPConn, it sendItem, to netip.AddrPort, stream *uint32) error {
	s.st.zero.Add(1)
	payload := AppendPageList(nil, PageList{Stream: nextStream(it, stream), Pages: []uint64{it.page}})
	return s.send(ctx, conn, to, TypeZero, payload)
}

func (s *Server) sendPage(ctx context.Context, conn *net.UDPConn, it sendItem, to netip.AddrPort, page []byte, stream *uint32) error {
	n, err := s.cfg.Image.ReadAt(page, int64(it.page)*PageSize)
	if n < PageSize && !errors.Is(err, io.EOF) {
		return err
	}
	clear(page[n:])
	payload := make([]byte, 0, fragmentHeader+fragmentSize(s.frags))
	for i := range s.frags {
		off, end := fragmentSpan(i, s.frags)
		f := Fragment{Page: it.page, Stream: nextStream(it, stream), Index: uint8(i), Count: uint8(s.frags), Data: page[off:end]}
		if err := s.send(ctx, conn, to, TypeFragment, AppendFragment(payload[:0], f)); err != nil {
			return err
		}
	}
	return nil
}

// send seals and sends one packet to to, paced.
func (s *Server) send(ctx context.Context, conn *net.UDPConn, to netip.AddrPort, typ Type, payload []byte) error {
	pkt, err := s.codec.seal(make([]byte, 0, Overhead+len(payload)), typ, payload)
	if err != nil {
		return err
	}
	if err := s.pacer.wait(ctx, len(pkt)); err != nil {
		return err
	}
	n, err := conn.WriteToUDPAddrPort(pkt, to)
	if err != nil {
		return err
	}
	s.net.sent(n)
	return nil
}
