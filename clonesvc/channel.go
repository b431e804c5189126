package clonesvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// channel is sfld's end of one VM's guest channel. It keeps a connection
// up while the VM runs (reconnecting after the VM's agent or sfld went
// away), says hello on every connect, sends sfld's own requests and
// replies, and hands the guest's requests to the service.
type channel struct {
	s *Service
	e *vmEntry

	mu      sync.Mutex
	conn    io.ReadWriteCloser
	nextID  uint64
	waiting map[uint64]chan *guestproto.Message
	closed  bool
	// ready is closed when the agent first answered hello.
	ready     chan struct{}
	readyOnce sync.Once
	done      chan struct{} // closed when run returns

	wmu sync.Mutex // serialises frame writes
}

func newChannel(s *Service, e *vmEntry) *channel {
	return &channel{s: s, e: e, waiting: map[uint64]chan *guestproto.Message{}, ready: make(chan struct{}), done: make(chan struct{})}
}

// run keeps the channel connected until the VM is gone or close is called.
func (c *channel) run() {
	defer close(c.done)
	for {
		if c.isClosed() {
			return
		}
		ctx, cancel := context.WithTimeout(c.s.ctx, 5*time.Second)
		conn, err := c.e.vm.DialChannel(ctx)
		cancel()
		if err != nil {
			select {
			case <-c.e.vm.Done():
				return
			case <-c.s.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			conn.Close()
			return
		}
		c.conn = conn
		c.mu.Unlock()
		go c.hello(conn)
		c.read(conn)
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
		conn.Close()
	}
}

func (c *channel) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// close drops the connection; run returns.
func (c *channel) close() {
	c.mu.Lock()
	c.closed = true
	if c.conn != nil {
		c.conn.Close()
	}
	for id, w := range c.waiting {
		close(w)
		delete(c.waiting, id)
	}
	c.mu.Unlock()
}

// read delivers frames until the connection fails.
func (c *channel) read(conn io.Reader) {
	r := guestproto.NewReader(conn)
	for {
		m, err := r.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !c.isClosed() {
				c.s.log.Debug().Str("vm", c.e.id()).Err(err).Msg("guest channel read")
			}
			if errors.Is(err, guestproto.ErrFrame) {
				c.s.log.Warn().Str("vm", c.e.id()).Err(err).Msg("malformed frame from guest; reconnecting")
			}
			return
		}
		if m.Reply {
			c.mu.Lock()
			w := c.waiting[m.ID]
			delete(c.waiting, m.ID)
			c.mu.Unlock()
			if w != nil {
				w <- m
			}
			continue
		}
		c.s.goBackground(func() { c.s.handleGuest(c.e, m) })
	}
}

// send writes one frame on the current connection.
func (c *channel) send(m *guestproto.Message) error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return fmt.Errorf("vm %s: guest channel not connected: %w", c.e.id(), ErrUnavailable)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return guestproto.Write(conn, m)
}

// reply answers guest request id.
func (c *channel) reply(id uint64, m *guestproto.Message) {
	m.ID, m.Reply = id, true
	if err := c.send(m); err != nil {
		c.s.log.Warn().Str("vm", c.e.id()).Uint64("request", id).Err(err).Msg("reply to guest lost")
	}
}

// call sends sfld's own request and waits for the agent's reply.
func (c *channel) call(ctx context.Context, m *guestproto.Message) (*guestproto.Message, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClosed
	}
	c.nextID++
	m.ID = c.nextID
	w := make(chan *guestproto.Message, 1)
	c.waiting[m.ID] = w
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.waiting, m.ID)
		c.mu.Unlock()
	}
	if err := c.send(m); err != nil {
		forget()
		return nil, err
	}
	select {
	case r, ok := <-w:
		if !ok {
			return nil, errClosed
		}
		if r.Error != nil {
			return nil, fmt.Errorf("vm %s: guest agent: %s", c.e.id(), r.Error.Message)
		}
		return r, nil
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("vm %s: waiting for the guest agent: %w", c.e.id(), ctx.Err())
	case <-c.e.vm.Done():
		forget()
		return nil, fmt.Errorf("vm %s exited: %w", c.e.id(), ErrVMFailed)
	}
}

// helloRetry is how long hello waits for the agent's answer before it
// connects again and says hello anew.
const helloRetry = 20 * time.Second

// hello greets the agent after connect conn. Its reply lists the requests
// the agent still waits on: a clone's resume reply is sent now; requests
// the service does not know (an earlier sfld took them to its grave) are
// failed so that no guest program waits forever.
//
// With no answer within helloRetry (the agent is not up yet, or the
// connection lost its answer: seen once on Xen, where a new connection
// then got it at once) hello closes conn, and run connects again and says
// hello again. The agent answers every hello; an answer to an older one
// is dropped.
func (c *channel) hello(conn io.Closer) {
	ctx, cancel := context.WithTimeout(c.s.ctx, helloRetry)
	defer cancel()
	r, err := c.call(ctx, &guestproto.Message{Op: guestproto.OpHello})
	if errors.Is(err, context.DeadlineExceeded) && c.s.ctx.Err() == nil {
		c.mu.Lock()
		current := c.conn == conn
		c.mu.Unlock()
		if current {
			c.s.log.Debug().Str("vm", c.e.id()).Dur("after", helloRetry).Msg("no answer to hello; connecting again")
			conn.Close() // read returns; run connects again
		}
		return
	}
	if err != nil {
		c.s.log.Debug().Str("vm", c.e.id()).Err(err).Msg("hello")
		return
	}
	c.readyOnce.Do(func() { close(c.ready) })
	c.s.agentReady(c.e, r.Agent)
	for _, id := range r.Pending {
		if resume := c.s.takeResume(c.e, id); resume != nil {
			c.reply(id, resume)
			continue
		}
		if c.e.inflight(id) {
			continue
		}
		c.reply(id, &guestproto.Message{Error: guestproto.NewError("unavailable",
			fmt.Errorf("request %d was lost: sfld restarted while it was in progress", id))})
	}
}

// waitReady blocks until the agent answered hello.
func (c *channel) waitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("vm %s: waiting for the guest agent: %w", c.e.id(), ctx.Err())
	case <-c.e.vm.Done():
		return fmt.Errorf("vm %s exited before its agent answered: %w", c.e.id(), ErrVMFailed)
	}
}

// isReady reports whether the agent has answered.
func (c *channel) isReady() bool {
	select {
	case <-c.ready:
		return true
	default:
		return false
	}
}
