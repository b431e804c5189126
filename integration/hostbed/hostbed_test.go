package hostbed_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snowflock/snowflock/integration/hostbed"
)

// bin holds sfld, sfctl and sfalloc, built once by TestMain (or taken from
// $HOSTBED_BIN).
var bin string

func TestMain(m *testing.M) {
	if h := os.Getenv("HOSTBED_HELPER"); h != "" {
		os.Exit(helper(h, os.Args[len(os.Args)-1]))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "hostbed tests need root (network namespaces, bridge, veth): run them as root (make test does)")
		return 1
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "hostbed tests need %s: apt-get install iproute2 util-linux (make deps)\n", tool)
			return 1
		}
	}
	bin = os.Getenv("HOSTBED_BIN")
	if bin == "" {
		dir, err := os.MkdirTemp("", "sf-hostbed-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/sfld", "./cmd/sfctl", "./cmd/sfalloc")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
			return 1
		}
		bin = dir
	}
	return m.Run()
}

// TestBed makes 3 hosts and checks each property of the bed, then takes it
// down and checks that nothing is left.
func TestBed(t *testing.T) {
	start := time.Now()
	b := hostbed.Up(t, hostbed.Options{Bin: bin})
	t.Logf("up: %d hosts in %v", len(b.Hosts), time.Since(start).Round(time.Millisecond))
	if len(b.Hosts) != hostbed.DefaultHosts {
		t.Fatalf("%d hosts, want %d", len(b.Hosts), hostbed.DefaultHosts)
	}
	for i, h := range b.Hosts {
		want := fmt.Sprintf("10.77.0.%d", i+1)
		if h.Name != fmt.Sprintf("h%d", i+1) || h.Addr != want || h.Listen != want+":7468" || h.Netns != b.Prefix+"-"+h.Name {
			t.Errorf("host %d: %+v", i, h)
		}
	}

	t.Run("InfoOverMTLS", func(t *testing.T) {
		for _, h := range b.Hosts {
			out, err := b.Sfctl(h.Name, "info", "--json")
			if err != nil {
				t.Fatalf("%v\n%s", err, b.Log(h.Name))
			}
			var info struct{ Host string }
			if err := json.Unmarshal(out, &info); err != nil || info.Host != h.Name {
				t.Errorf("%s: info printed %s (%v)", h.Name, out, err)
			}
		}
		// Across the bridge: from h1's namespace to h3's sfld.
		h3 := b.Host("h3")
		out, err := b.Exec("h1", filepath.Join(bin, "sfctl"), "--config", h3.Config, "--addr", h3.Listen,
			"--tls-dir", b.AdminDir, "--cert", "admin", "info", "--json")
		if err != nil || !strings.Contains(string(out), `"h3"`) {
			t.Errorf("h1 → h3: %v: %s", err, out)
		}
		// A client whose certificate comes from another CA is refused by
		// the server (the client trusts the bed's CA, so the refusal is
		// the server's).
		other := t.TempDir()
		cfg := filepath.Join(other, "snowflock.yaml")
		if err := os.WriteFile(cfg, fmt.Appendf(nil, "state_dir: %s/state\nsfld:\n  name: other\n  tls_dir: %s/ca\n", other, other), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(filepath.Join(bin, "sfld"), "--config", cfg, "init-ca").CombinedOutput(); err != nil {
			t.Fatalf("init-ca: %v: %s", err, out)
		}
		foreign := filepath.Join(other, "client")
		os.Mkdir(foreign, 0o700)
		for src, dst := range map[string]string{
			filepath.Join(b.AdminDir, "ca.crt"):     "ca.crt",
			filepath.Join(other, "ca", "admin.crt"): "admin.crt",
			filepath.Join(other, "ca", "admin.key"): "admin.key",
		} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(foreign, dst), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// sfctl itself refuses such a certificate: probe with a bare TLS
		// client, the operator's certificate first.
		probe := func(dir string) string {
			cmd := b.Command("h1", os.Args[0], "-test.run=^$", h3.Listen+","+dir)
			cmd.Env = append(cmd.Env, "HOSTBED_HELPER=tlsprobe")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("TLS probe: %v", err)
			}
			return strings.TrimSpace(string(out))
		}
		if got := probe(b.AdminDir); got != "accepted" {
			t.Errorf("TLS probe with the operator certificate: %s", got)
		}
		if got := probe(foreign); !strings.HasPrefix(got, "refused") {
			t.Errorf("TLS probe with a certificate of another CA: %s", got)
		} else {
			t.Logf("certificate of another CA: %s", got)
		}
	})

	t.Run("SharedStaticPool", func(t *testing.T) {
		// Every host's state_dir leads to the one pool database.
		first, err := os.Stat(filepath.Join(b.Hosts[0].StateDir, "static.db"))
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range b.Hosts[1:] {
			fi, err := os.Stat(filepath.Join(h.StateDir, "static.db"))
			if err != nil || !os.SameFile(first, fi) {
				t.Fatalf("%s has its own pool database (%v)", h.Name, err)
			}
		}
		// Slots taken through h1's configuration are gone for h3's.
		sfalloc := func(h hostbed.Host, args ...string) ([]byte, error) {
			cmd := exec.Command(filepath.Join(bin, "sfalloc"), append([]string{"--config", h.Config}, args...)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			return cmd.CombinedOutput()
		}
		all := len(b.Hosts) * hostbed.DefaultSlots
		out, err := sfalloc(b.Hosts[0], "request", "-n", strconv.Itoa(all), "--immediate", "-q")
		if err != nil {
			t.Fatalf("sfalloc request -n %d: %v: %s", all, err, out)
		}
		id := strings.TrimSpace(string(out))
		if out, err := sfalloc(b.Hosts[2], "request", "-n", "1", "--immediate"); err == nil {
			t.Errorf("h3 got a slot from a full pool: %s", out)
		}
		if out, err := sfalloc(b.Hosts[1], "release", id); err != nil {
			t.Fatalf("h2 releases h1's allocation: %v: %s", err, out)
		}
		if out, err := sfalloc(b.Hosts[2], "request", "-n", "1", "--immediate", "--json"); err != nil {
			t.Errorf("h3 after the release: %v: %s", err, out)
		}
	})

	t.Run("MulticastCrossesBridge", func(t *testing.T) {
		const group, n = "239.77.1.1:17001", 20
		var recv []*helperProc
		for _, h := range b.Hosts[1:] {
			recv = append(recv, startHelper(t, b, h.Name, "mrecv", group, n))
		}
		if out, err := helperCmd(b, "h1", "send", group, n).CombinedOutput(); err != nil {
			t.Fatalf("send: %v: %s", err, out)
		}
		for i, r := range recv {
			if got := r.result(t); got != n {
				t.Errorf("%s received %d of %d multicast datagrams from h1", b.Hosts[i+1].Name, got, n)
			}
		}
	})

	t.Run("NetemLossAppliesAndClears", func(t *testing.T) {
		h2 := b.Host("h2")
		const n = 1000
		dest := h2.Addr + ":17002"
		transfer := func() int {
			r := startHelper(t, b, "h2", "urecv", dest, n)
			if out, err := helperCmd(b, "h1", "send", dest, n).CombinedOutput(); err != nil {
				t.Fatalf("send: %v: %s", err, out)
			}
			return r.result(t)
		}
		if got := transfer(); got < n*99/100 {
			t.Fatalf("no loss set: %d of %d datagrams arrived", got, n)
		}
		if err := b.Netem("h2", "loss 30%"); err != nil {
			t.Fatal(err)
		}
		got := transfer()
		t.Logf("loss 30%%: %d of %d datagrams arrived", got, n)
		if got < n*55/100 || got > n*85/100 {
			t.Errorf("loss 30%%: %d of %d datagrams arrived, want about 70%%", got, n)
		}
		if err := b.Netem("h2", "clear"); err != nil {
			t.Fatal(err)
		}
		if got := transfer(); got < n*99/100 {
			t.Errorf("loss cleared: %d of %d datagrams arrived", got, n)
		}
		if err := b.Netem("h2", "delay 10ms"); err == nil {
			t.Error("Netem accepted a spec it cannot make")
		}
	})

	t.Run("DownLeavesNothing", func(t *testing.T) {
		// A command left running inside a namespace is ended too.
		stray := b.Command("h2", "sleep", "300")
		if err := stray.Start(); err != nil {
			t.Fatal(err)
		}
		var pids []int
		for _, h := range b.Hosts {
			pids = append(pids, h.PID)
		}
		watchdog := readPID(t, filepath.Join(b.Dir, "run", "watchdog.pid"))
		start := time.Now()
		if err := b.Down(); err != nil {
			t.Fatal(err)
		}
		t.Logf("down in %v", time.Since(start).Round(time.Millisecond))
		checkGone(t, b, append(pids, watchdog))
		if err := stray.Wait(); err == nil {
			t.Error("the command left in h2's namespace was not stopped")
		}
		if err := b.Down(); err != nil {
			t.Errorf("second Down: %v", err)
		}
		// And the script's own second down.
		if out, err := exec.Command(hostbed.DefaultScript(), "down", "--prefix", b.Prefix).CombinedOutput(); err != nil {
			t.Errorf("testbed down after down: %v: %s", err, out)
		}
	})
}

// TestStaleBedIsReplaced leaves a bed half up, as a killed test would (its
// watchdog and owner gone, one sfld dead, one namespace gone), and checks
// that the next Up of the same prefix takes it down first.
func TestStaleBedIsReplaced(t *testing.T) {
	prefix := fmt.Sprintf("sfhbs%d", os.Getpid())
	owner := exec.Command("sleep", "300")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	stale, err := hostbed.Start(hostbed.Options{Bin: bin, Prefix: prefix, Owner: owner.Process.Pid})
	if err != nil {
		owner.Process.Kill()
		t.Fatal(err)
	}
	t.Cleanup(func() { stale.Down() })
	watchdog := readPID(t, filepath.Join(stale.Dir, "run", "watchdog.pid"))
	syscall.Kill(watchdog, syscall.SIGKILL)
	owner.Process.Kill()
	owner.Wait()
	syscall.Kill(stale.Hosts[2].PID, syscall.SIGKILL)
	if out, err := exec.Command("ip", "netns", "delete", stale.Hosts[1].Netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns delete: %v: %s", err, out)
	}

	b := hostbed.Up(t, hostbed.Options{Bin: bin, Prefix: prefix})
	checkGone(t, nil, []int{stale.Hosts[0].PID, stale.Hosts[1].PID, stale.Hosts[2].PID, watchdog})
	for _, h := range b.Hosts {
		if _, err := b.Sfctl(h.Name, "info"); err != nil {
			t.Errorf("%s of the new bed: %v", h.Name, err)
		}
	}
}

// TestOwnerWatchdog: a bed whose owner lives cannot be replaced; when the
// owner ends, its watchdog takes the bed down.
func TestOwnerWatchdog(t *testing.T) {
	owner := exec.Command("sleep", "300")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	defer owner.Process.Kill()
	b, err := hostbed.Start(hostbed.Options{Bin: bin, Hosts: 2, Owner: owner.Process.Pid, Subnet: "10.77.9.0/29"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Down() })
	if b.Hosts[1].Addr != "10.77.9.2" {
		t.Errorf("h2's address is %s, want 10.77.9.2 (--subnet)", b.Hosts[1].Addr)
	}
	if _, err := hostbed.Start(hostbed.Options{Bin: bin, Hosts: 2, Prefix: b.Prefix}); err == nil || !strings.Contains(err.Error(), "live process") {
		t.Errorf("a second Up of a bed with a live owner: %v", err)
	}
	pids := []int{b.Hosts[0].PID, b.Hosts[1].PID}
	owner.Process.Kill()
	owner.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(b.Dir); errors.Is(err, os.ErrNotExist) && len(bedNetns(t, b.Prefix)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bed is still up 20s after its owner ended")
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkGone(t, b, pids)
}

// checkGone checks that no process of pids runs any more (a PID reused by
// another program does not count), and, with a bed, that its namespaces
// and directory are gone.
func checkGone(t *testing.T, b *hostbed.Bed, pids []int) {
	t.Helper()
	for _, pid := range pids {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && (strings.Contains(string(cmdline), "/sfld") || strings.Contains(string(cmdline), "watchdog")) {
			t.Errorf("process %d still runs: %q", pid, cmdline)
		}
	}
	if b == nil {
		return
	}
	if ns := bedNetns(t, b.Prefix); len(ns) > 0 {
		t.Errorf("namespaces left: %v", ns)
	}
	if _, err := os.Lstat(b.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left (%v)", b.Dir, err)
	}
	if _, err := os.Lstat(filepath.Join("/run/snowflock-hosts", b.Prefix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("registry entry of %s left (%v)", b.Prefix, err)
	}
}

// bedNetns lists the namespaces named PREFIX-….
func bedNetns(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var ns []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			ns = append(ns, f[0])
		}
	}
	return ns
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// ---- UDP helpers, run as this test binary inside a host's namespace.

// helperCmd runs this test binary as helper mode (mrecv, urecv or send) in
// host's namespace.
func helperCmd(b *hostbed.Bed, host, mode, addr string, n int) *exec.Cmd {
	cmd := b.Command(host, os.Args[0], "-test.run=^$", fmt.Sprintf("%s,%d", addr, n))
	cmd.Env = append(cmd.Env, "HOSTBED_HELPER="+mode)
	return cmd
}

type helperProc struct {
	cmd   *exec.Cmd
	lines *bufio.Scanner
}

// startHelper starts a receiver and waits until it listens.
func startHelper(t *testing.T, b *hostbed.Bed, host, mode, addr string, n int) *helperProc {
	t.Helper()
	cmd := helperCmd(b, host, mode, addr, n)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := &helperProc{cmd: cmd, lines: bufio.NewScanner(out)}
	if !p.lines.Scan() || p.lines.Text() != "ready" {
		t.Fatalf("%s in %s did not get ready: %q", mode, host, p.lines.Text())
	}
	return p
}

// result waits for the receiver's count.
func (p *helperProc) result(t *testing.T) int {
	t.Helper()
	if !p.lines.Scan() {
		t.Fatalf("receiver printed no count: %v", p.lines.Err())
	}
	n, err := strconv.Atoi(strings.TrimPrefix(p.lines.Text(), "got "))
	if err != nil {
		t.Fatalf("receiver printed %q", p.lines.Text())
	}
	p.cmd.Wait()
	return n
}

// helper runs one helper mode; arg is "ADDR,N" (tlsprobe: "ADDR,TLSDIR").
func helper(mode, arg string) int {
	addrText, nText, _ := strings.Cut(arg, ",")
	if mode == "tlsprobe" {
		fmt.Println(tlsProbe(addrText, nText))
		return 0
	}
	n, _ := strconv.Atoi(nText)
	addr, err := net.ResolveUDPAddr("udp4", addrText)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch mode {
	case "send":
		c, err := net.DialUDP("udp4", nil, addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for i := range n {
			if _, err := fmt.Fprintf(c, "datagram %d", i); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if i%20 == 19 {
				time.Sleep(time.Millisecond)
			}
		}
		return 0
	case "mrecv", "urecv":
		var c *net.UDPConn
		if mode == "mrecv" {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			c, err = net.ListenMulticastUDP("udp4", ifi, addr)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		} else if c, err = net.ListenUDP("udp4", addr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c.SetReadBuffer(4 << 20)
		fmt.Println("ready")
		// Count until n arrived, or 1 s after the last one (10 s before
		// the first).
		got, buf := 0, make([]byte, 2048)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for got < n {
			if _, _, err := c.ReadFromUDP(buf); err != nil {
				break
			}
			got++
			c.SetReadDeadline(time.Now().Add(time.Second))
		}
		fmt.Printf("got %d\n", got)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown helper %q\n", mode)
	return 2
}

// tlsProbe connects to a daemon API address with dir's admin certificate
// and CA certificate: "accepted" when the server speaks after the
// handshake (gRPC sends its HTTP/2 settings first), else "refused: …".
func tlsProbe(addr, dir string) string {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key"))
	if err != nil {
		return "error: " + err.Error()
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return "error: " + err.Error()
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return "error: no certificate in ca.crt"
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		// Present the certificate whatever CAs the server asks for.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		RootCAs:              roots, NextProtos: []string{"h2"},
	})
	if err != nil {
		return "refused: " + err.Error()
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 64)); err != nil {
		return "refused: " + err.Error()
	}
	return "accepted"
}
