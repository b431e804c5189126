package mcdist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// socketBuffer is the send and receive buffer asked for on every socket:
// a burst of pages must not overflow the receiver. As root (CAP_NET_ADMIN)
// it is forced past net.core.{r,w}mem_max; otherwise the kernel caps it
// there.
const socketBuffer = 4 << 20

// setBuffers sizes conn's buffers (best effort: a smaller buffer only
// costs retries).
func setBuffers(conn *net.UDPConn) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return
	}
	forced := false
	_ = raw.Control(func(fd uintptr) {
		forced = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer) == nil &&
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) == nil
	})
	if !forced {
		_ = conn.SetReadBuffer(socketBuffer)
		_ = conn.SetWriteBuffer(socketBuffer)
	}
}

// lookupInterface returns the named interface, or nil for "".
func lookupInterface(name string) (*net.Interface, error) {
	if name == "" {
		return nil, nil
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("mcdist: interface %q: %w", name, err)
	}
	return ifi, nil
}

// checkGroup checks that group is an IPv4 multicast address and port.
func checkGroup(group netip.AddrPort) error {
	if !group.Addr().Is4() || !group.Addr().IsMulticast() || group.Port() == 0 {
		return fmt.Errorf("group %v is not an IPv4 multicast address and port", group)
	}
	return nil
}

// listenUnicast opens a UDP socket on addr that sends multicast out of
// ifi (nil: the routing table's choice) with the given TTL.
func listenUnicast(addr netip.AddrPort, ifi *net.Interface, ttl int) (*net.UDPConn, error) {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("mcdist: listen %v: %w", addr, err)
	}
	return prepareUnicast(conn, ifi, ttl)
}

// prepareUnicast sets the buffers and multicast options of an open UDP
// socket; on failure it closes conn.
func prepareUnicast(conn *net.UDPConn, ifi *net.Interface, ttl int) (*net.UDPConn, error) {
	addr := conn.LocalAddr()
	setBuffers(conn)
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("mcdist: %w", err)
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		if ifi != nil {
			serr = unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)})
		}
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, ttl)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("mcdist: multicast options on %v: %w", addr, err)
	}
	return conn, nil
}

// listenGroup joins group on ifi (nil: the routing table's choice) and
// returns a socket that receives its packets.
func listenGroup(group netip.AddrPort, ifi *net.Interface) (*net.UDPConn, error) {
	conn, err := net.ListenMulticastUDP("udp4", ifi, net.UDPAddrFromAddrPort(group))
	if err != nil {
		return nil, fmt.Errorf("mcdist: join %v: %w", group, err)
	}
	setBuffers(conn)
	return conn, nil
}

// readLoop passes each datagram conn receives to handle (the slice is
// reused: handle must not keep it), counting it in t, until conn is
// closed.
func readLoop(ctx context.Context, conn *net.UDPConn, log *slog.Logger, t *traffic, handle func(pkt []byte, from netip.AddrPort)) {
	buf := make([]byte, MaxPacket)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Warn("mcdist: read", "err", err)
				continue
			}
			return
		}
		t.received(n)
		handle(buf[:n], from)
	}
}
