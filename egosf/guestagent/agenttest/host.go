// Package agenttest runs a guest agent (guestagent) against a fake sfld on
// a stand-in virtio-serial port, for tests of the agent and of programs
// that use the guest API.
package agenttest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/egosf/guestagent"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// Handler answers a request the agent forwarded to sfld; nil leaves it
// unanswered (Host.Next returns it; answer later with Host.Send).
type Handler func(req *guestproto.Message) *guestproto.Message

// Host is a running agent and the fake sfld on the host side of its port.
type Host struct {
	// Socket is the agent's socket for programs.
	Socket string

	t       testing.TB
	handle  Handler
	port    *Port
	unasked chan *guestproto.Message

	mu         sync.Mutex
	conn       net.Conn // host side of the current connection
	nextID     uint64
	calls      map[uint64]chan *guestproto.Message
	identities []guestproto.Identity
	console    bytes.Buffer
}

// Start runs an agent for the test's duration, connected to a fake sfld
// that answers forwarded requests with handle.
func Start(t testing.TB, handle Handler) *Host {
	t.Helper()
	if handle == nil {
		handle = func(*guestproto.Message) *guestproto.Message { return nil }
	}
	h := &Host{
		Socket:  filepath.Join(t.TempDir(), "sfguest.sock"),
		t:       t,
		handle:  handle,
		port:    newPort(),
		unasked: make(chan *guestproto.Message, 64),
		calls:   map[uint64]chan *guestproto.Message{},
	}
	l, err := net.Listen("unix", h.Socket)
	if err != nil {
		t.Fatal(err)
	}
	a := guestagent.New(guestagent.Config{
		Port:       h.port,
		Listener:   l,
		Version:    "test",
		Console:    consoleWriter{h},
		Identity:   h.recordIdentity,
		RetryDelay: 5 * time.Millisecond,
		Log:        zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h.Reconnect()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
		h.Disconnect()
	})
	return h
}

// Disconnect closes the host side of the port, as sfld does when it
// stops or before a clone's QEMU takes over the channel.
func (h *Host) Disconnect() {
	h.mu.Lock()
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
	h.mu.Unlock()
	h.port.disconnect()
}

// Reconnect connects a fresh host side to the port (after Disconnect).
func (h *Host) Reconnect() {
	host, guest, err := socketPair()
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.conn = host
	h.mu.Unlock()
	h.port.connect(guest)
	go h.read(host)
}

// read serves one host connection: replies go to Call, requests to the
// handler.
func (h *Host) read(conn net.Conn) {
	r := guestproto.NewReader(conn)
	for {
		m, err := r.Read()
		if err != nil {
			return
		}
		if m.Reply {
			h.mu.Lock()
			ch := h.calls[m.ID]
			delete(h.calls, m.ID)
			h.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		if reply := h.handle(m); reply != nil {
			reply.ID, reply.Op, reply.Reply = m.ID, m.Op, true
			h.Send(reply)
			continue
		}
		h.unasked <- m
	}
}

// Send writes a frame to the agent over the current connection.
func (h *Host) Send(m *guestproto.Message) error {
	var b bytes.Buffer
	if err := guestproto.Write(&b, m); err != nil {
		return err
	}
	return h.WriteRaw(b.Bytes())
}

// WriteRaw writes bytes to the agent as they are (malformed input).
func (h *Host) WriteRaw(b []byte) error {
	h.mu.Lock()
	conn := h.conn
	h.mu.Unlock()
	if conn == nil {
		return errors.New("agenttest: host not connected")
	}
	_, err := conn.Write(b)
	return err
}

// Next returns the next forwarded request that the handler left
// unanswered, failing the test after a few seconds without one.
func (h *Host) Next() *guestproto.Message {
	h.t.Helper()
	select {
	case m := <-h.unasked:
		return m
	case <-time.After(5 * time.Second):
		h.t.Fatal("agenttest: no request reached the host")
		return nil
	}
}

// Call sends a host request (hello, exec, identity) and waits for its reply.
func (h *Host) Call(ctx context.Context, req *guestproto.Message) (*guestproto.Message, error) {
	ch := make(chan *guestproto.Message, 1)
	h.mu.Lock()
	h.nextID++
	m := *req
	m.ID = h.nextID
	h.calls[m.ID] = ch
	h.mu.Unlock()
	if err := h.Send(&m); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Identities returns the identities the agent took on, in order.
func (h *Host) Identities() []guestproto.Identity {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]guestproto.Identity(nil), h.identities...)
}

// Console returns what exec'd commands wrote to the console.
func (h *Host) Console() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.console.String()
}

func (h *Host) recordIdentity(id *guestproto.Identity) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.identities = append(h.identities, *id)
	return nil
}

type consoleWriter struct{ h *Host }

func (c consoleWriter) Write(p []byte) (int, error) {
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	return c.h.console.Write(p)
}
