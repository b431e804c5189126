package mcdist

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// flight is one page being fetched; concurrent Fetches of the page share
// it.
type flight struct {
	done chan struct{}
	err  error // set before done is closed
}

// pageRequest is one page to ask for.
type pageRequest struct {
	page  uint64
	retry bool
}

// Fetch returns once page is in the Store, asking the server for it (and
// retrying with exponential backoff) unless it is there already or
// another Fetch is asking. It fails with an error wrapping
// errdefs.ErrUnavailable once FetchBound passes without the page (or when
// Run stops), with errdefs.ErrInvalidArgument for a page past the image's
// end, or with ctx's error.
func (c *Client) Fetch(ctx context.Context, page uint64) error {
	if c.cfg.Store.Have(page) {
		return nil
	}
	bound := time.NewTimer(c.cfg.FetchBound)
	defer bound.Stop()
	select {
	case <-c.ready:
	case <-c.stopped:
		return c.unavailable(page, "the client is not running")
	case <-ctx.Done():
		return ctx.Err()
	case <-bound.C:
		return c.unavailable(page, "the client is not running")
	}
	c.mu.Lock()
	f, asking := c.flights[page]
	if !asking {
		f = &flight{done: make(chan struct{})}
		c.flights[page] = f
	}
	c.mu.Unlock()
	if !asking {
		if c.cfg.Store.Have(page) { // it arrived before the flight was listed
			c.finish(page, nil)
		} else {
			go c.drive(page, f)
		}
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unavailable counts a failed fetch and returns its error.
func (c *Client) unavailable(page uint64, why string) error {
	c.st.failed.Add(1)
	return fmt.Errorf("mcdist: fetch page %d: %w: memory server unreachable: %s", page, errdefs.ErrUnavailable, why)
}

// drive asks for page until it arrives, FetchBound passes or Run stops.
func (c *Client) drive(page uint64, f *flight) {
	deadline := time.Now().Add(c.cfg.FetchBound)
	timeout := c.cfg.Timeout
	for retry := false; ; retry = true {
		if retry {
			c.st.retries.Add(1)
		}
		select {
		case c.reqs <- pageRequest{page: page, retry: retry}:
		case <-f.done:
			return
		case <-c.stopped:
			c.finish(page, c.unavailable(page, "the client stopped"))
			return
		}
		left := time.Until(deadline)
		t := time.NewTimer(min(timeout, left))
		select {
		case <-f.done:
			t.Stop()
			return
		case <-c.stopped:
			t.Stop()
			c.finish(page, c.unavailable(page, "the client stopped"))
			return
		case <-t.C:
		}
		if timeout >= left {
			c.finish(page, c.unavailable(page, fmt.Sprintf("no reply within %v", c.cfg.FetchBound)))
			return
		}
		timeout = min(2*timeout, c.cfg.MaxBackoff)
	}
}

// finish completes page's flight with err, reporting whether there was
// one.
func (c *Client) finish(page uint64, err error) bool {
	c.mu.Lock()
	f := c.flights[page]
	delete(c.flights, page)
	c.mu.Unlock()
	if f == nil {
		return false
	}
	f.err = err
	close(f.done)
	return true
}

// requestLoop sends queued page requests, up to MaxBatch pages a packet,
// until ctx is done.
func (c *Client) requestLoop(ctx context.Context) {
	var fresh, retries []uint64
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-c.reqs:
			fresh, retries = fresh[:0], retries[:0]
			for {
				if r.retry {
					retries = append(retries, r.page)
				} else {
					fresh = append(fresh, r.page)
				}
				if len(fresh) == MaxBatch || len(retries) == MaxBatch {
					break
				}
				var more bool
				select {
				case r, more = <-c.reqs:
				default:
				}
				if !more {
					break
				}
			}
			c.request(fresh, false)
			c.request(retries, true)
		}
	}
}

// request sends one request for pages, leaving out those that arrived
// while the request waited.
func (c *Client) request(pages []uint64, retry bool) {
	pages = slices.DeleteFunc(pages, c.cfg.Store.Have)
	if len(pages) == 0 {
		return
	}
	c.st.requested.Add(uint64(len(pages)))
	c.send(TypeRequest, AppendRequest(nil, Request{Retry: retry, Pages: pages}))
}

// send seals and sends one packet to the server.
func (c *Client) send(typ Type, payload []byte) {
	pkt, err := c.codec.seal(nil, typ, payload)
	if err != nil {
		c.log.Warn("mcdist: client seal", "err", err)
		return
	}
	n, err := c.conn.WriteToUDPAddrPort(pkt, c.cfg.Server)
	if err != nil {
		c.log.Debug("mcdist: client send", "err", err)
		return
	}
	c.net.sent(n)
}

// reportLoop reports the receive rate and gives up stale partial pages
// every ReportInterval until ctx is done.
func (c *Client) reportLoop(ctx context.Context) {
	tick := time.NewTicker(c.cfg.ReportInterval)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			c.asm.expire(now)
			c.mu.Lock()
			s := &c.stream
			r := Report{IntervalMillis: uint32(max(1, now.Sub(last).Milliseconds())), Bytes: s.bytes, Packets: s.packets, Expected: s.top - s.base}
			s.bytes, s.packets, s.base = 0, 0, s.top
			c.mu.Unlock()
			last = now
			if r.Bytes > 0 || r.Expected > 0 {
				c.send(TypeReport, AppendReport(nil, r))
			}
		}
	}
}
