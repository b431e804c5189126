package daemonapi

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/egosf/config"
)

// DefaultListen is the daemon API's default address.
const DefaultListen = "127.0.0.1:7468"

// Config is the sfld section of the configuration file: what the daemon
// runs with and what sfctl needs to reach it.
type Config struct {
	Listen string `mapstructure:"listen" json:"listen"`
	// Address is this host's daemon API address as other hosts reach it
	// (default: Listen); its host part must be an IP address for clones
	// on other hosts (the memory server listens there).
	Address string `mapstructure:"address" json:"address"`
	// MemoryGroupPort is the UDP port of the families' multicast groups;
	// FetchTimeout bounds a clone's wait for a page (defaults 7469, 10s).
	MemoryGroupPort int           `mapstructure:"memory_group_port" json:"memory_group_port"`
	FetchTimeout    time.Duration `mapstructure:"fetch_timeout" json:"fetch_timeout"`
	// MemoryUnicast turns mcdist's multicast off (the baseline of the
	// benchmarks): every page goes to the host that asked alone.
	MemoryUnicast  bool          `mapstructure:"memory_unicast" json:"memory_unicast"`
	Name           string        `mapstructure:"name" json:"name"`
	TLSDir         string        `mapstructure:"tls_dir" json:"tls_dir"`
	Hypervisor     string        `mapstructure:"hypervisor" json:"hypervisor"`
	Lease          time.Duration `mapstructure:"lease" json:"lease"`
	RequestTimeout time.Duration `mapstructure:"request_timeout" json:"request_timeout"`
	// Backends' sections, undecoded (sfld decodes the one it runs).
	KVM map[string]any `mapstructure:"kvm" json:"kvm,omitempty"`
	Xen map[string]any `mapstructure:"xen" json:"xen,omitempty"`
}

// LoadConfig decodes and checks file's sfld section, filling defaults.
func LoadConfig(file *config.Config) (Config, error) {
	var c Config
	if err := config.Decode(file.Sfld, &c); err != nil {
		return c, fmt.Errorf("config %s: sfld: %w (%w)", file.Source, err, clonesvc.ErrInvalidArgument)
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c, fmt.Errorf("config %s: sfld.listen %q: want HOST:PORT: %w", file.Source, c.Listen, clonesvc.ErrInvalidArgument)
	}
	if c.Address == "" {
		c.Address = c.Listen
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return c, fmt.Errorf("config %s: sfld.address %q: want HOST:PORT: %w", file.Source, c.Address, clonesvc.ErrInvalidArgument)
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("host name: %w", err)
		}
		c.Name = h
	}
	if c.TLSDir == "" {
		c.TLSDir = filepath.Join(file.StateDir, "tls")
	}
	if c.Lease != 0 && c.Lease < time.Second {
		return c, fmt.Errorf("config %s: sfld.lease %s: at least 1s: %w", file.Source, c.Lease, clonesvc.ErrInvalidArgument)
	}
	return c, nil
}
