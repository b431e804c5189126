package config

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the configuration parser: it must return
// a configuration or a one-line error, never panic.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"state_dir: /var/lib/snowflock\nallocator:\n  backend: static\n  static:\n    placement: spread\n    hosts:\n      - {name: h1, address: 10.0.0.1, slots: 4}\n",
		"allocator: {static: {hosts: 'h1=10.0.0.1:4,h2:2'}}",
		"allocator: [1, 2",
		"state_dir: [a]",
		"&a [*a]",
		"allocator: {static: null}",
		"? [a, b]\n: c\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz", Options{EnvKeys: []string{"allocator.static.hosts"}})
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error: %q", err)
			}
			return
		}
		if c.StateDir == "" || c.Allocator.Backend == "" {
			t.Errorf("accepted config without state_dir or backend: %+v", c)
		}
	})
}
