package agenttest

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Port stands in for a virtio-serial port on the agent's side: one
// long-lived device whose host side connects and disconnects. While the
// host is not connected, Read returns EOF at once and Write waits, as the
// Linux virtio_console driver does.
type Port struct {
	mu     sync.Mutex
	cond   *sync.Cond
	guest  net.Conn // the agent's end of the current connection; nil: host not connected
	closed bool
}

func newPort() *Port {
	p := &Port{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// connect makes guest the current connection.
func (p *Port) connect(guest net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.guest = guest
	p.cond.Broadcast()
}

// disconnect drops the current connection.
func (p *Port) disconnect() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.guest != nil {
		p.guest.Close()
		p.guest = nil
	}
}

// Read reads from the current connection; EOF while none is connected or
// when the connection ends.
func (p *Port) Read(b []byte) (int, error) {
	p.mu.Lock()
	c, closed := p.guest, p.closed
	p.mu.Unlock()
	switch {
	case closed:
		return 0, net.ErrClosed
	case c == nil:
		return 0, io.EOF
	}
	n, err := c.Read(b)
	if err != nil {
		p.mu.Lock()
		closed = p.closed
		p.mu.Unlock()
		if closed {
			return n, net.ErrClosed
		}
		return n, io.EOF
	}
	return n, nil
}

// Write waits for a connected host and writes b to it (again to the next
// connection if this one ends under the write).
func (p *Port) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		for p.guest == nil && !p.closed {
			p.cond.Wait()
		}
		if p.closed {
			return 0, net.ErrClosed
		}
		c := p.guest
		p.mu.Unlock()
		n, err := c.Write(b)
		p.mu.Lock()
		if err == nil {
			return n, nil
		}
		if p.guest == c {
			p.guest = nil
		}
	}
}

// Close closes the port: blocked and later calls fail with net.ErrClosed.
func (p *Port) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.guest != nil {
		p.guest.Close()
	}
	p.cond.Broadcast()
	return nil
}

// socketPair returns the two connected ends of a unix stream socket pair.
func socketPair() (host, guest net.Conn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "port")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("socketpair: %w", err)
		}
	}
	return conns[0], conns[1], nil
}
