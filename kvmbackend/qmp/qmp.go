// Package qmp is a small client of the QEMU Machine Protocol: commands with
// contexts, replies of any size matched by id, and events that never block
// the connection's reader.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// Error is an error reply of QEMU ({"error": {"class": …, "desc": …}}).
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// ErrClosed is returned by calls on a monitor whose connection is closed
// (by Close, or because QEMU went away).
var ErrClosed = errors.New("qmp: connection closed")

// Event is an asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data,omitempty"`
	// Time is QEMU's timestamp of the event.
	Time time.Time `json:"-"`
}

// message is any line QEMU sends: greeting, reply or event.
type message struct {
	Greeting  *json.RawMessage `json:"QMP,omitempty"`
	ID        *string          `json:"id,omitempty"`
	Return    json.RawMessage  `json:"return,omitempty"`
	Error     *Error           `json:"error,omitempty"`
	Event     string           `json:"event,omitempty"`
	Data      json.RawMessage  `json:"data,omitempty"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp,omitempty"`
}

// kind of a parsed line.
const (
	kindGreeting = iota + 1
	kindReply
	kindEvent
)

// parseLine decodes one line of QEMU's output and says what it is. Lines
// that are none of greeting, reply (with an id, and return or error) or
// event are errors.
func parseLine(line []byte) (message, int, error) {
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		return m, 0, fmt.Errorf("qmp: bad message %.80q: %w", line, err)
	}
	switch {
	case m.Greeting != nil:
		return m, kindGreeting, nil
	case m.Event != "":
		return m, kindEvent, nil
	case m.Error != nil || m.Return != nil:
		if m.ID == nil {
			return m, 0, fmt.Errorf("qmp: reply without id: %.80q", line)
		}
		return m, kindReply, nil
	}
	return m, 0, fmt.Errorf("qmp: message is neither reply nor event: %.80q", line)
}

// Monitor is a QMP connection. Its methods are safe for concurrent use.
//
// Events: Subscribe returns a buffered subscription; the reader never
// blocks on it — when a subscriber's buffer is full its oldest event is
// dropped and counted. WaitEvent waits for the next event of one name that
// arrives after the call.
type Monitor struct {
	conn net.Conn
	done chan struct{}

	writeMu sync.Mutex // serialises writes of commands

	mu      sync.Mutex // guards the fields below
	nextID  uint64
	pending map[string]chan message
	subs    map[*Subscription]struct{}
	err     error // why the connection ended
}

// maxLine caps one message (QEMU's largest replies, e.g. query-qmp-schema,
// are a few hundred KiB).
const maxLine = 64 << 20

// Dial connects to a QMP socket, reads the greeting and negotiates
// capabilities. The monitor then lives until Close or until QEMU closes the
// connection (Done).
func Dial(ctx context.Context, socketPath string) (*Monitor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", socketPath, err)
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	// The greeting must come before the deadline of ctx.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	line, err := readLine(r)
	stop()
	if err == nil {
		var kind int
		if _, kind, err = parseLine(line); err == nil && kind != kindGreeting {
			err = fmt.Errorf("qmp: first message is not a greeting: %.80q", line)
		}
	}
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qmp: greeting from %s: %w", socketPath, ctx.Err())
		}
		return nil, fmt.Errorf("qmp: greeting from %s: %w", socketPath, err)
	}
	conn.SetReadDeadline(time.Time{})
	m := &Monitor{
		conn:    conn,
		done:    make(chan struct{}),
		pending: map[string]chan message{},
		subs:    map[*Subscription]struct{}{},
	}
	go m.read(r)
	if err := m.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// readLine reads one newline-terminated line of any length up to maxLine.
func readLine(r *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			return buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if len(buf) > maxLine {
				return nil, fmt.Errorf("qmp: message longer than %d bytes", maxLine)
			}
		default:
			return nil, err
		}
	}
}

// read dispatches QEMU's messages until the connection ends.
func (m *Monitor) read(r *bufio.Reader) {
	var err error
	for {
		var line []byte
		if line, err = readLine(r); err != nil {
			break
		}
		msg, kind, perr := parseLine(line)
		if perr != nil {
			err = perr
			break
		}
		switch kind {
		case kindReply:
			m.mu.Lock()
			ch := m.pending[*msg.ID]
			delete(m.pending, *msg.ID)
			m.mu.Unlock()
			if ch != nil {
				ch <- msg // buffered: never blocks
			}
		case kindEvent:
			ev := Event{Name: msg.Event, Data: msg.Data}
			if ts := msg.Timestamp; ts != nil {
				ev.Time = time.Unix(ts.Seconds, ts.Microseconds*1000)
			}
			m.mu.Lock()
			for s := range m.subs {
				s.deliver(ev)
			}
			m.mu.Unlock()
		}
	}
	m.shutdown(err)
}

// shutdown records why the connection ended and wakes every waiter.
func (m *Monitor) shutdown(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return
	default:
	}
	if m.err == nil {
		m.err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	m.conn.Close()
	close(m.done)
}

// Done is closed when the connection has ended (Close, or QEMU exited).
func (m *Monitor) Done() <-chan struct{} { return m.done }

// Err says why the connection ended (nil while it is open).
func (m *Monitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Close ends the connection. It is safe to call more than once.
func (m *Monitor) Close() error {
	m.shutdown(errors.New("closed by client"))
	return nil
}

type command struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id"`
}

// Execute runs one command. args (if non-nil) are marshalled as the
// command's "arguments"; the reply's "return" is decoded into result (if
// non-nil). A QMP error reply is returned as *Error.
func (m *Monitor) Execute(ctx context.Context, cmd string, args, result any) error {
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	m.nextID++
	id := strconv.FormatUint(m.nextID, 10)
	ch := make(chan message, 1)
	m.pending[id] = ch
	m.mu.Unlock()
	forget := func() {
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
	}

	data, err := json.Marshal(command{Execute: cmd, Arguments: args, ID: id})
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: arguments: %w", cmd, err)
	}
	data = append(data, '\n')
	// Commands are small: a write blocks only if QEMU stopped reading, and
	// then the context's deadline (if any) ends it. A failed write leaves
	// the stream in an unknown state, so it ends the connection.
	deadline, _ := ctx.Deadline()
	m.writeMu.Lock()
	m.conn.SetWriteDeadline(deadline)
	_, err = m.conn.Write(data)
	m.writeMu.Unlock()
	if err != nil {
		forget()
		m.shutdown(fmt.Errorf("write of %s: %w", cmd, err))
		return fmt.Errorf("qmp %s: %w", cmd, m.Err())
	}

	select {
	case reply := <-ch:
		if reply.Error != nil {
			return fmt.Errorf("qmp %s: %w", cmd, reply.Error)
		}
		if result != nil {
			if err := json.Unmarshal(reply.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
			}
		}
		return nil
	case <-m.done:
		forget()
		return fmt.Errorf("qmp %s: %w", cmd, m.Err())
	case <-ctx.Done():
		forget()
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

// Subscription receives the events of some names (all events if none were
// named). Its channel is buffered; when it is full the oldest event is
// dropped (Dropped counts them) so that the connection's reader never
// waits for a subscriber.
type Subscription struct {
	m     *Monitor
	names map[string]bool
	c     chan Event

	dropped int // guarded by m.mu
}

// Subscribe starts a subscription with room for buf events (at least 1).
// Only events that arrive after the call are delivered.
func (m *Monitor) Subscribe(buf int, names ...string) *Subscription {
	s := &Subscription{m: m, c: make(chan Event, max(buf, 1))}
	if len(names) > 0 {
		s.names = map[string]bool{}
		for _, n := range names {
			s.names[n] = true
		}
	}
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s
}

// deliver queues ev without blocking. Preconditions: s.m.mu is held.
func (s *Subscription) deliver(ev Event) {
	if s.names != nil && !s.names[ev.Name] {
		return
	}
	for {
		select {
		case s.c <- ev:
			return
		default:
		}
		select {
		case <-s.c:
			s.dropped++
		default:
		}
	}
}

// C is the subscription's channel. It is never closed; watch the
// monitor's Done for the end of the connection.
func (s *Subscription) C() <-chan Event { return s.c }

// Dropped is how many events were dropped because the buffer was full.
func (s *Subscription) Dropped() int {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.dropped
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.m.mu.Lock()
	delete(s.m.subs, s)
	s.m.mu.Unlock()
}

// WaitEvent waits for the next event called name that arrives after the
// call. To not miss an event caused by a command, Subscribe before running
// the command instead.
func (m *Monitor) WaitEvent(ctx context.Context, name string) (Event, error) {
	s := m.Subscribe(1, name)
	defer s.Close()
	return s.Next(ctx)
}

// Next waits for the subscription's next event.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	select {
	case ev := <-s.c:
		return ev, nil
	case <-s.m.done:
		// An event may have arrived just before the end.
		select {
		case ev := <-s.c:
			return ev, nil
		default:
		}
		return Event{}, fmt.Errorf("qmp: waiting for event: %w", s.m.Err())
	case <-ctx.Done():
		return Event{}, fmt.Errorf("qmp: waiting for event: %w", ctx.Err())
	}
}
