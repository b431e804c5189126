package mcdist

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// bed is a test network: hosts, each a network namespace with one
// interface (eth0) on a bridge that lives in a namespace of its own, so
// the root namespace is never touched. Every name carries a random
// prefix, so parallel runs do not clash; t.Cleanup removes everything.
type bed struct {
	tb     testing.TB
	prefix string
	hosts  []bedHost
}

// bedHost is one host of a bed.
type bedHost struct {
	ns   string     // namespace name
	port string     // its veth's name inside the bridge namespace
	addr netip.Addr // eth0's address
}

// testGroup is the group the tests multicast on (inside the bed only).
var testGroup = netip.MustParseAddrPort("239.77.0.1:7700")

// newBed makes n hosts with addresses 10.77.0.1, 10.77.0.2, ... on a
// bridge with multicast snooping off (so the bridge floods the group).
func newBed(tb testing.TB, n int) *bed {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("mcdist tests need root: they build network namespaces, veth pairs and a bridge")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Fatalf("mcdist tests need ip (iproute2): %v", err)
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	b := &bed{tb: tb, prefix: "mcd" + hex.EncodeToString(r[:])}
	br := b.prefix + "-br"
	b.mustNetns(br)
	b.ip(br, "link", "set", "lo", "up")
	b.ip(br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	b.ip(br, "link", "set", "br0", "up")
	for i := range n {
		h := bedHost{ns: fmt.Sprintf("%s-h%d", b.prefix, i), port: fmt.Sprintf("v%d", i), addr: netip.AddrFrom4([4]byte{10, 77, 0, byte(i + 1)})}
		b.mustNetns(h.ns)
		b.ip(br, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		b.ip(br, "link", "set", h.port, "master", "br0", "up")
		b.ip(h.ns, "link", "set", "lo", "up")
		b.ip(h.ns, "addr", "add", h.addr.String()+"/24", "dev", "eth0")
		b.ip(h.ns, "link", "set", "eth0", "up")
		b.ip(h.ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
		b.hosts = append(b.hosts, h)
	}
	return b
}

// mustNetns adds a namespace and registers its removal.
func (b *bed) mustNetns(name string) {
	b.tb.Helper()
	b.run("ip", "netns", "add", name)
	b.tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			b.tb.Errorf("remove namespace %s: %v: %s", name, err, out)
		}
	})
}

// ip runs ip(8) in namespace ns.
func (b *bed) ip(ns string, args ...string) {
	b.tb.Helper()
	b.run("ip", append([]string{"-n", ns}, args...)...)
}

func (b *bed) run(name string, args ...string) {
	b.tb.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// lossy makes host i's link drop pct% of its packets both ways: with
// tc netem on eth0 and on its bridge port where the kernel has netem, else
// (CONFIG_NET_SCH_NETEM unset, as on our test machines) with nftables
// rules in the host's namespace that drop that share of UDP packets at
// random on input and output.
func (b *bed) lossy(i int, pct int) {
	b.tb.Helper()
	h := b.hosts[i]
	loss := fmt.Sprintf("%d%%", pct)
	err := exec.Command("tc", "-n", h.ns, "qdisc", "add", "dev", "eth0", "root", "netem", "loss", loss).Run()
	if err == nil {
		b.run("tc", "-n", b.prefix+"-br", "qdisc", "add", "dev", h.port, "root", "netem", "loss", loss)
		return
	}
	if _, err := exec.LookPath("nft"); err != nil {
		b.tb.Fatalf("no netem and no nft (nftables) to make a lossy link: %v", err)
	}
	rule := fmt.Sprintf("meta l4proto udp numgen random mod 100 < %d drop", pct)
	b.run("ip", "netns", "exec", h.ns, "nft", fmt.Sprintf(
		"table inet mcdloss { chain in { type filter hook input priority 0; %s; }; chain out { type filter hook output priority 0; %s; }; }", rule, rule))
}

// in runs fn on a thread inside host i's namespace, in a new goroutine,
// and returns at once. The thread stays locked and dies with the
// goroutine, so no other goroutine ever runs in the namespace; sockets
// fn opens stay in it and may be used from anywhere.
func (b *bed) in(i int, fn func()) {
	ns := b.hosts[i].ns
	fail := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with us
		if err := enterNetns(ns); err != nil {
			fail <- err
			return
		}
		fail <- nil
		fn()
	}()
	if err := <-fail; err != nil {
		b.tb.Fatal(err)
	}
}

// inWait is in, waiting for fn to return.
func (b *bed) inWait(i int, fn func()) {
	done := make(chan struct{})
	b.in(i, func() { defer close(done); fn() })
	<-done
}

// enterNetns moves the calling thread into the named namespace.
func enterNetns(name string) error {
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", name, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter namespace %s: %w", name, err)
	}
	return nil
}
