// Package xenstore is a client of the xenstore wire protocol (Xen's
// xs_wire.h) over xenstored's unix socket or the Linux xenbus device.
//
// One Client is one connection. Its methods are safe for concurrent use:
// requests are pipelined, each tagged with its own req_id; a single reader
// goroutine matches replies to requests by req_id and hands watch events
// to their Watch by token. Every blocking call honours its context; a call
// given up on leaves the connection usable (its late reply is discarded).
// A broken or closed connection fails every waiting call at once.
//
// Paths are absolute ("/local/domain/5/data") or, on a domain's
// connection, relative to the domain's home /local/domain/<domid>.
package xenstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"sync"
	"syscall"
)

// EnvPath names the environment variable that, if set, is the first
// transport Open tries (as libxenstore does).
const EnvPath = "XENSTORED_PATH"

// DevicePath is the Linux xenbus device: the way to xenstore from a domU,
// and from dom0 when xenstored runs in a stub domain.
const DevicePath = "/dev/xen/xenbus"

// socketPaths are xenstored's unix sockets in dom0.
var socketPaths = []string{"/var/run/xenstored/socket", "/run/xenstored/socket"}

// devicePath is DevicePath; tests replace it.
var devicePath = DevicePath

// devicePayloadMax caps a request's payload on the Linux xenbus device,
// whose buffer holds the header and the payload in XENSTORE_PAYLOAD_MAX
// bytes (drivers/xen/xenbus/xenbus_dev_frontend.c).
const devicePayloadMax = XENSTORE_PAYLOAD_MAX - SizeOfSockMsg

// writeQueue bounds the requests waiting for the writer goroutine.
const writeQueue = 64

// Client is a connection to xenstore.
type Client struct {
	conn io.ReadWriteCloser
	// device: conn is the Linux xenbus device, which refuses a bad request
	// by failing its write(2) (no reply comes) and whose buffer limits a
	// request's payload to devicePayloadMax.
	device     bool
	maxPayload int

	writeq chan outMsg
	done   chan struct{} // closed when the connection is down

	mu      sync.Mutex // guards the fields below
	err     error      // why the connection is down (wraps ErrClosed)
	nextID  uint32
	pending map[uint32]chan reply
	watches map[string]*Watch // by token
}

type outMsg struct {
	id  uint32
	msg []byte
}

type reply struct {
	h       SockMsg
	payload []byte
	errno   string // set instead when the device refused the request
}

// Open connects to xenstore: $XENSTORED_PATH if set, then xenstored's
// unix sockets, then the xenbus device. Its error names every transport it
// tried and why each failed.
func Open(ctx context.Context) (*Client, error) {
	var paths []string
	if p := os.Getenv(EnvPath); p != "" {
		paths = append(paths, p)
	}
	paths = append(paths, socketPaths...)
	paths = append(paths, devicePath)
	var errs []error
	for _, p := range paths {
		c, err := Dial(ctx, p)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("xenstore: no transport (tried $%s, %v): %w", EnvPath, paths, errors.Join(errs...))
}

// Dial connects to xenstore at path: a unix socket of xenstored, or the
// xenbus device (a character device).
func Dial(ctx context.Context, path string) (*Client, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("xenstore: %w", err)
	}
	switch {
	case fi.Mode()&fs.ModeSocket != 0:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, fmt.Errorf("xenstore: %w", err)
		}
		return NewClient(conn), nil
	case fi.Mode()&fs.ModeCharDevice != 0:
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("xenstore: %w", err)
		}
		return newClient(f, true), nil
	}
	return nil, fmt.Errorf("xenstore: %s is neither a socket nor a character device: %w", path, fs.ErrInvalid)
}

// NewClient returns a client of the xenstore connection conn (a socket
// connection to xenstored, or a test peer). The client owns conn and
// closes it on Close.
func NewClient(conn io.ReadWriteCloser) *Client { return newClient(conn, false) }

func newClient(conn io.ReadWriteCloser, device bool) *Client {
	c := &Client{
		conn:       conn,
		device:     device,
		maxPayload: XENSTORE_PAYLOAD_MAX,
		writeq:     make(chan outMsg, writeQueue),
		done:       make(chan struct{}),
		pending:    map[uint32]chan reply{},
		watches:    map[string]*Watch{},
	}
	if device {
		c.maxPayload = devicePayloadMax
	}
	go c.readLoop()
	go c.writeLoop()
	return c
}

// Close closes the connection. Waiting calls fail with ErrClosed and every
// Watch's channel is closed. xenstored drops the connection's watches and
// aborts its transactions itself.
func (c *Client) Close() error {
	c.shutdown(nil)
	return nil
}

// Done is closed when the connection is down; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is up, then an error wrapping
// ErrClosed and its cause.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// shutdown takes the connection down once, for cause (nil: Close).
func (c *Client) shutdown(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if cause == nil {
		c.err = ErrClosed
	} else {
		c.err = fmt.Errorf("%w: %w", ErrClosed, cause)
	}
	c.pending = map[uint32]chan reply{}
	for tok, w := range c.watches {
		delete(c.watches, tok)
		w.err = c.err
		close(w.ch)
	}
	close(c.done)
	c.mu.Unlock()
	c.conn.Close()
}

// readLoop reads and dispatches messages until the connection ends.
func (c *Client) readLoop() {
	r := bufio.NewReaderSize(c.conn, 2*(SizeOfSockMsg+XENSTORE_PAYLOAD_MAX))
	for {
		h, payload, err := readMsg(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.EOF
			}
			c.shutdown(fmt.Errorf("read: %w", err))
			return
		}
		if h.Type == XS_WATCH_EVENT {
			// Linux's xenbus device leaves req_id and tx_id of events
			// uninitialised: route by type and token only.
			c.dispatchEvent(payload)
			continue
		}
		c.mu.Lock()
		ch := c.pending[h.ReqID]
		delete(c.pending, h.ReqID)
		c.mu.Unlock()
		if ch != nil {
			ch <- reply{h: h, payload: payload} // buffered: never blocks
		}
		// else: the reply to a call given up on (or to a fire-and-forget
		// request): discarded.
	}
}

// writeLoop writes queued requests, one whole message per write: the
// xenbus device acts on the first message of a write and drops the rest.
func (c *Client) writeLoop() {
	for {
		select {
		case m := <-c.writeq:
			n, err := c.conn.Write(m.msg)
			if err == nil {
				continue
			}
			var errno syscall.Errno
			if c.device && n == 0 && errors.As(err, &errno) && errnoNames[errno] != "" {
				// The device refused this request only (e.g. a watch
				// xenstored would not register): fail it, keep going.
				c.mu.Lock()
				ch := c.pending[m.id]
				delete(c.pending, m.id)
				c.mu.Unlock()
				if ch != nil {
					ch <- reply{errno: errnoNames[errno]}
				}
				continue
			}
			c.shutdown(fmt.Errorf("write: %w", err))
			return
		case <-c.done:
			return
		}
	}
}

// register allocates a req_id and, if ch is not nil, records ch as the
// place its reply goes.
func (c *Client) register(ch chan reply) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	for {
		c.nextID++
		if _, busy := c.pending[c.nextID]; c.nextID != 0 && !busy {
			break
		}
	}
	if ch != nil {
		c.pending[c.nextID] = ch
	}
	return c.nextID, nil
}

func (c *Client) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// call sends one request and waits for its reply payload. path only labels
// errors.
func (c *Client) call(ctx context.Context, op MsgType, tx uint32, path string, payload []byte) ([]byte, error) {
	if len(payload) > c.maxPayload {
		return nil, fmt.Errorf("xenstore %s %s: payload of %d bytes exceeds %d: %w", op, path, len(payload), c.maxPayload, ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return nil, c.ctxErr(ctx, op, path)
	}
	ch := make(chan reply, 1)
	id, err := c.register(ch)
	if err != nil {
		return nil, fmt.Errorf("xenstore %s %s: %w", op, path, err)
	}
	m := outMsg{id: id, msg: appendMsg(nil, SockMsg{Type: op, ReqID: id, TxID: tx}, payload)}
	select {
	case c.writeq <- m:
	case <-ctx.Done():
		c.forget(id)
		return nil, c.ctxErr(ctx, op, path)
	case <-c.done:
		return nil, fmt.Errorf("xenstore %s %s: %w", op, path, c.Err())
	}
	var r reply
	select {
	case r = <-ch:
	case <-ctx.Done():
		c.forget(id)
		return nil, c.ctxErr(ctx, op, path)
	case <-c.done:
		select {
		case r = <-ch: // the reply made it before the end
		default:
			return nil, fmt.Errorf("xenstore %s %s: %w", op, path, c.Err())
		}
	}
	switch {
	case r.errno != "":
		return nil, &Error{Op: op.String(), Path: path, Errno: r.errno}
	case r.h.Type == XS_ERROR:
		errno, err := parseErrno(r.payload)
		if err != nil {
			return nil, fmt.Errorf("xenstore %s %s: %w", op, path, err)
		}
		return nil, &Error{Op: op.String(), Path: path, Errno: errno}
	case r.h.Type != op:
		return nil, fmt.Errorf("xenstore %s %s: reply of type %s: %w", op, path, r.h.Type, ErrProtocol)
	}
	return r.payload, nil
}

// post queues a request whose reply nobody waits for (the reader discards
// it), without blocking: used to undo a watch whose WATCH call was given
// up on. It keeps the request's place in the queue unless the queue is
// full.
func (c *Client) post(op MsgType, payload []byte) {
	id, err := c.register(nil)
	if err != nil {
		return
	}
	m := outMsg{id: id, msg: appendMsg(nil, SockMsg{Type: op, ReqID: id}, payload)}
	select {
	case c.writeq <- m:
	default:
		go func() {
			select {
			case c.writeq <- m:
			case <-c.done:
			}
		}()
	}
}

func (c *Client) ctxErr(ctx context.Context, op MsgType, path string) error {
	return fmt.Errorf("xenstore %s %s: %w", op, path, context.Cause(ctx))
}
