package static

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Placement says how a grant is spread over hosts.
type Placement string

const (
	// Pack fills hosts in configuration order: as few hosts as possible.
	Pack Placement = "pack"
	// Spread deals slots one at a time round the hosts: as many hosts as
	// possible, counts as even as possible.
	Spread Placement = "spread"
)

// DefaultLease is the lease of an allocation whose request names none.
const DefaultLease = time.Hour

// Host is one host of the pool.
type Host struct {
	Name    string `mapstructure:"name" json:"name"`
	Address string `mapstructure:"address" json:"address"`
	Slots   int    `mapstructure:"slots" json:"slots"`
	// Tags are matched by a request's ResReq (comma-separated tags, all
	// required).
	Tags []string `mapstructure:"tags" json:"tags,omitempty"`
}

// HostList is the pool's hosts. Besides a YAML list it decodes from the
// compact text form used in environment variables:
// "name=address:slots,name=address:slots" (address optional: "name:slots").
type HostList []Host

// UnmarshalText parses the compact form of a host list.
func (l *HostList) UnmarshalText(text []byte) error {
	var out HostList
	for item := range strings.SplitSeq(string(text), ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		i := strings.LastIndexByte(item, ':')
		if i < 0 {
			return fmt.Errorf("host %q: want name=address:slots or name:slots", item)
		}
		n, err := strconv.Atoi(item[i+1:])
		if err != nil {
			return fmt.Errorf("host %q: slot count %q is not a number", item, item[i+1:])
		}
		h := Host{Name: item[:i], Slots: n}
		if name, addr, ok := strings.Cut(h.Name, "="); ok {
			h.Name, h.Address = name, addr
		}
		out = append(out, h)
	}
	if len(out) == 0 {
		return fmt.Errorf("host list %q names no host", text)
	}
	*l = out
	return nil
}

// Config is the static backend's configuration (section allocator.static).
type Config struct {
	// Hosts of the pool; empty means this host with one slot per CPU.
	Hosts HostList `mapstructure:"hosts" json:"hosts"`
	// Placement is pack or spread (default spread).
	Placement Placement `mapstructure:"placement" json:"placement"`
	// Lease is the default lease (default DefaultLease).
	Lease time.Duration `mapstructure:"lease" json:"lease"`
	// StateDir holds the pool's database; set from the top-level state_dir.
	StateDir string `mapstructure:"-" json:"-"`
}

// ThisHost is the default pool: this machine, one slot per CPU.
func ThisHost() Host {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "localhost"
	}
	addr := "127.0.0.1"
	if ips, err := net.LookupIP(name); err == nil {
		for _, ip := range ips {
			if v4 := ip.To4(); v4 != nil && !v4.IsLoopback() {
				addr = v4.String()
				break
			}
		}
	}
	return Host{Name: name, Address: addr, Slots: onlineCPUs()}
}

// onlineCPUs counts the machine's online CPUs (not this process's affinity,
// so that every process sees the same default pool).
func onlineCPUs() int {
	data, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for part := range strings.SplitSeq(strings.TrimSpace(string(data)), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		switch {
		case !isRange && err1 == nil:
			n++
		case isRange && err1 == nil && err2 == nil && b >= a:
			n += b - a + 1
		default:
			return runtime.NumCPU()
		}
	}
	return max(n, 1)
}

// withDefaults fills in what the configuration left out.
func (c Config) withDefaults() Config {
	if len(c.Hosts) == 0 {
		c.Hosts = HostList{ThisHost()}
	}
	if c.Placement == "" {
		c.Placement = Spread
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	hosts := make(HostList, len(c.Hosts))
	for i, h := range c.Hosts {
		if h.Address == "" {
			h.Address = h.Name
		}
		hosts[i] = h
	}
	c.Hosts = hosts
	return c
}

// Validate reports the first problem of a configuration. Empty fields are
// valid: they take their defaults.
func (c Config) Validate() error {
	switch c.Placement {
	case "", Pack, Spread:
	default:
		return fmt.Errorf("allocator.static.placement %q: want pack or spread", c.Placement)
	}
	if c.Lease != 0 && c.Lease < time.Second {
		return fmt.Errorf("allocator.static.lease %s: want at least 1s", c.Lease)
	}
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		switch {
		case h.Name == "":
			return fmt.Errorf("allocator.static.hosts[%d]: name is empty", i)
		case !plainWord(h.Name) || strings.ContainsAny(h.Name, ":=#"):
			return fmt.Errorf("allocator.static.hosts[%d]: name %q: want printable characters without spaces, ',', ':', '=' or '#'", i, h.Name)
		case seen[h.Name]:
			return fmt.Errorf("allocator.static.hosts[%d]: host %q listed twice", i, h.Name)
		case h.Slots < 0:
			return fmt.Errorf("allocator.static.hosts[%d] (%s): slots %d is negative", i, h.Name, h.Slots)
		case h.Slots > 1<<20:
			return fmt.Errorf("allocator.static.hosts[%d] (%s): slots %d is implausibly large", i, h.Name, h.Slots)
		case h.Address != "" && !plainWord(h.Address):
			return fmt.Errorf("allocator.static.hosts[%d] (%s): address %q: want printable characters without spaces or ','", i, h.Name, h.Address)
		}
		for _, tag := range h.Tags {
			if tag == "" || !plainWord(tag) {
				return fmt.Errorf("allocator.static.hosts[%d] (%s): tag %q: want printable characters without spaces or ','", i, h.Name, tag)
			}
		}
		seen[h.Name] = true
	}
	return nil
}

// plainWord says whether s is printable, without white space or commas: safe
// in host lists, hostfiles, environment variables and terminals.
func plainWord(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == ',' {
			return false
		}
	}
	return true
}
