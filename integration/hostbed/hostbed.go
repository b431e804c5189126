// Package hostbed gives tests several SnowFlock hosts on one machine: network
// namespaces joined by a bridge, one sfld in each with a certificate from a
// test CA, and one static pool shared by all of them.
//
// It drives contrib/testbed/hosts/testbed, which does all the work, so that
// the tests and `make hosts-up` build the same bed. Each host hN is the
// namespace PREFIX-hN with eth0 on the bridge (namespace PREFIX-br, IP
// multicast flooded to every host) and the Nth address of the subnet; its
// sfld listens on ADDR:7468. Nothing in the root network namespace is
// touched, so the bed's addresses are reachable only from inside its
// namespaces: run commands there with Bed.Command, Bed.Exec or Bed.Sfctl.
//
// A bed is taken down by Bed.Down (registered with t.Cleanup by Up), by a
// watchdog when the owner process (the test binary) is gone, or by the next
// Up of the same prefix, which removes a stale bed first.
package hostbed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Defaults of Options.
const (
	DefaultHosts  = 3
	DefaultSubnet = "10.77.0.0/24"
	DefaultSlots  = 4
)

// Port is the port every host's sfld listens on (at its own address).
const Port = 7468

// Options say what bed to make. Only Bin is required.
type Options struct {
	// Hosts is the number of hosts, h1..hN (default DefaultHosts).
	Hosts int
	// Bin is the directory holding the sfld and sfctl binaries to run.
	Bin string
	// Prefix names the namespaces (PREFIX-h1…, PREFIX-br): a lower-case
	// letter then up to 15 letters or digits. Default: unique to this
	// process and call.
	Prefix string
	// Subnet holds the hosts' addresses: h1 has its first address
	// (default DefaultSubnet). It exists only inside the bed.
	Subnet string
	// Dir holds everything of the bed (default: /run/snowflock-hosts/PREFIX).
	Dir string
	// Slots is each host's slot count in the shared static pool (default
	// DefaultSlots); SlotsPerHost, when set, gives each host its own (a
	// host with 0 is left out of the pool).
	Slots        int
	SlotsPerHost []int
	// MemoryUnicast runs the sflds with mcdist's multicast off (the
	// baseline of the benchmarks).
	MemoryUnicast bool
	// Kernel and Initrd are the hosts' default guest kernel and initramfs
	// (sfld.kvm.kernel/initrd); empty leaves them out.
	Kernel, Initrd string
	// Owner is the process whose end takes the bed down (default: this
	// process; -1: no watchdog).
	Owner int
	// Script is the test bed script (default: contrib/testbed/hosts/testbed
	// of the source tree this package was built from).
	Script string
}

// Host is one host of a bed.
type Host struct {
	Name     string // h1, h2, …: sfld.name and its certificate's name
	Addr     string // its IP address, e.g. 10.77.0.1
	Listen   string // its sfld's address, Addr:Port
	Netns    string // its network namespace (/run/netns/NAME)
	StateDir string // its state_dir
	Config   string // its configuration file
	PID      int    // its sfld's PID
	sfctl    []string
}

// SfctlArgs returns the command line that runs sfctl against the host's sfld
// with the test CA's operator certificate: it starts with nsenter into the
// host's namespace (the address is reachable only there). Append sfctl's
// arguments and run it.
func (h Host) SfctlArgs() []string { return append([]string(nil), h.sfctl...) }

// Bed is a running set of hosts.
type Bed struct {
	Prefix string
	Dir    string
	Subnet string
	Bin    string
	// AdminDir holds the operator certificate (admin.crt, admin.key) and
	// the CA certificate: sfctl's --tls-dir.
	AdminDir string
	Hosts    []Host
	script   string
	logf     func(format string, args ...any) // the script's warnings; nil: dropped

	mu   sync.Mutex
	down bool
}

var seq atomic.Int32

// Start makes a bed. On failure nothing of it is left.
func Start(opts Options) (*Bed, error) { return start(opts, nil) }

func start(opts Options, logf func(string, ...any)) (*Bed, error) {
	if opts.Bin == "" {
		return nil, errors.New("hostbed: Options.Bin is empty: build sfld and sfctl first")
	}
	bin, err := filepath.Abs(opts.Bin)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"sfld", "sfctl"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return nil, fmt.Errorf("hostbed: %w (build sfld and sfctl into Options.Bin)", err)
		}
	}
	if opts.Hosts == 0 {
		opts.Hosts = DefaultHosts
	}
	if opts.Subnet == "" {
		opts.Subnet = DefaultSubnet
	}
	if opts.Slots == 0 {
		opts.Slots = DefaultSlots
	}
	if opts.Prefix == "" {
		opts.Prefix = fmt.Sprintf("sfhb%dn%d", os.Getpid(), seq.Add(1))
	}
	if opts.Owner == 0 {
		opts.Owner = os.Getpid()
	}
	if opts.Script == "" {
		opts.Script = DefaultScript()
	}
	slots := strconv.Itoa(opts.Slots)
	if len(opts.SlotsPerHost) > 0 {
		var per []string
		for _, n := range opts.SlotsPerHost {
			per = append(per, strconv.Itoa(n))
		}
		slots = strings.Join(per, ",")
	}
	args := []string{"up", strconv.Itoa(opts.Hosts), "--prefix", opts.Prefix, "--subnet", opts.Subnet,
		"--bin", bin, "--slots", slots}
	if opts.MemoryUnicast {
		args = append(args, "--memory-unicast")
	}
	if opts.Dir != "" {
		args = append(args, "--dir", opts.Dir)
	}
	if opts.Owner > 0 {
		args = append(args, "--owner", strconv.Itoa(opts.Owner))
	}
	if opts.Kernel != "" {
		args = append(args, "--kernel", opts.Kernel)
	}
	if opts.Initrd != "" {
		args = append(args, "--initrd", opts.Initrd)
	}
	b := &Bed{Prefix: opts.Prefix, Subnet: opts.Subnet, Bin: bin, script: opts.Script, logf: logf}
	out, err := b.run(2*time.Minute, args...)
	if err != nil {
		// A script that failed took down what it made (and one that
		// refused made nothing); one that was killed could not.
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || !ee.Exited() {
			b.runDown(opts.Dir)
		}
		return nil, fmt.Errorf("hostbed: %w", err)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "SFHOSTS_DIR="); ok {
			b.Dir = v
		}
	}
	if b.Dir == "" {
		b.runDown(opts.Dir)
		return nil, fmt.Errorf("hostbed: testbed up printed no SFHOSTS_DIR:\n%s", out)
	}
	if err := b.load(); err != nil {
		b.Down()
		return nil, fmt.Errorf("hostbed: %w", err)
	}
	return b, nil
}

// Up makes a bed for a test and takes it down when the test ends; a
// failure to make it fails the test.
func Up(t testing.TB, opts Options) *Bed {
	t.Helper()
	b, err := start(opts, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Down(); err != nil {
			t.Errorf("hostbed: %v", err)
		}
	})
	return b
}

// DefaultScript is contrib/testbed/hosts/testbed in the source tree this
// package was built from.
func DefaultScript() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "contrib", "testbed", "hosts", "testbed")
}

// load reads what the script recorded in Dir.
func (b *Bed) load() error {
	b.AdminDir = filepath.Join(b.Dir, "admin")
	data, err := os.ReadFile(filepath.Join(b.Dir, "hosts"))
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) != 6 {
			return fmt.Errorf("%s/hosts: bad line %q", b.Dir, line)
		}
		h := Host{Name: f[0], Addr: f[1], Netns: f[2], StateDir: f[3], Config: f[4], Listen: f[5]}
		argv, err := os.ReadFile(filepath.Join(b.Dir, h.Name, "sfctl.argv"))
		if err != nil {
			return err
		}
		h.sfctl = strings.Split(strings.TrimSuffix(string(argv), "\n"), "\n")
		pid, err := os.ReadFile(filepath.Join(b.Dir, "run", "sfld-"+h.Name+".pid"))
		if err != nil {
			return err
		}
		if h.PID, err = strconv.Atoi(strings.TrimSpace(string(pid))); err != nil {
			return fmt.Errorf("sfld pid of %s: %w", h.Name, err)
		}
		b.Hosts = append(b.Hosts, h)
	}
	if len(b.Hosts) == 0 {
		return fmt.Errorf("%s/hosts lists no host", b.Dir)
	}
	return nil
}

// Host returns the host called name (h1, h2, …), or nil.
func (b *Bed) Host(name string) *Host {
	for i := range b.Hosts {
		if b.Hosts[i].Name == name {
			return &b.Hosts[i]
		}
	}
	return nil
}

func (b *Bed) host(name string) (*Host, error) {
	if h := b.Host(name); h != nil {
		return h, nil
	}
	return nil, fmt.Errorf("hostbed %s: no host %q", b.Prefix, name)
}

// Command returns a command that runs name with args inside host's network
// namespace (nsenter --net: the machine's mounts, /sys and /run stay in
// view). Its environment is this process's without SNOWFLOCK_* variables.
func (b *Bed) Command(host, name string, args ...string) *exec.Cmd {
	netns := b.Prefix + "-" + host
	h, err := b.host(host)
	if h != nil {
		netns = h.Netns
	}
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + netns, name}, args...)...)
	if err != nil {
		cmd.Err = err
	}
	cmd.Env = cleanEnv()
	return cmd
}

// Exec runs a command inside host's network namespace and returns its
// combined output.
func (b *Bed) Exec(host string, cmd ...string) ([]byte, error) {
	if len(cmd) == 0 {
		return nil, errors.New("hostbed: Exec: no command")
	}
	c := b.Command(host, cmd[0], cmd[1:]...)
	out, err := c.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", strings.Join(cmd, " "), host, err, out)
	}
	return out, nil
}

// Sfctl runs sfctl against host's sfld (from inside host's namespace, with
// the operator certificate) and returns its standard output; standard
// error is in the error.
func (b *Bed) Sfctl(host string, args ...string) ([]byte, error) {
	h, err := b.host(host)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	argv := append(h.SfctlArgs(), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("sfctl %s on %s: %w: %s", strings.Join(args, " "), host, err, stderr.String())
	}
	return out, nil
}

// Netem sets packet loss on host's link, both directions: spec is netem's
// "loss P%" (e.g. "loss 10%"); "" or "clear" removes it. The loss is made
// by nftables in the bridge (the test machines' kernel has no sch_netem):
// a frame the host sends is lost for all its receivers, as on a real link.
func (b *Bed) Netem(host, spec string) error {
	if _, err := b.host(host); err != nil {
		return err
	}
	if spec == "" {
		spec = "clear"
	}
	_, err := b.run(time.Minute, "netem", "--prefix", b.Prefix, "--dir", b.Dir, host, spec)
	return err
}

// Status returns the script's status table (an error if a host does not
// answer).
func (b *Bed) Status() (string, error) {
	out, err := b.run(time.Minute, "status", "--prefix", b.Prefix, "--dir", b.Dir)
	return string(out), err
}

// Log returns the end of host's sfld log, for failure messages.
func (b *Bed) Log(host string) string {
	data, _ := os.ReadFile(filepath.Join(b.Dir, "log", "sfld-"+host+".log"))
	if len(data) > 6000 {
		data = data[len(data)-6000:]
	}
	return string(data)
}

// Down stops every process of the bed (sflds, their VMs, commands left
// inside its namespaces) and removes its namespaces and directory. It may
// be called more than once.
func (b *Bed) Down() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return nil
	}
	if err := b.runDown(b.Dir); err != nil {
		return err
	}
	b.down = true
	return nil
}

func (b *Bed) runDown(dir string) error {
	args := []string{"down", "--prefix", b.Prefix}
	if dir != "" {
		args = append(args, "--dir", dir)
	}
	_, err := b.run(time.Minute, args...)
	return err
}

// run runs the script; its standard output is returned, and its standard
// error is in the error.
func (b *Bed) run(timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.script, args...)
	cmd.Env = append(cleanEnv(), "TESTBED_QUIET=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// The script's daemons write to their own logs: its pipes close when
	// it exits.
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("testbed %s: %w: %s", strings.Join(args, " "), err, lastLines(stderr.String(), 40))
	}
	if stderr.Len() > 0 && b.logf != nil {
		b.logf("testbed %s: %s", args[0], strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// cleanEnv is this process's environment without SNOWFLOCK_* variables: the
// bed's commands read only the bed's configuration.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SNOWFLOCK_") {
			env = append(env, kv)
		}
	}
	return env
}

func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
