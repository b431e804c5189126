package static

import (
	"strings"
	"testing"
)

// FuzzHostListText feeds arbitrary text to the compact host list parser
// (SNOWFLOCK_ALLOCATOR_STATIC_HOSTS): an error or a list that is either
// valid or refused by Validate, never a panic.
func FuzzHostListText(f *testing.F) {
	for _, seed := range []string{"h1=10.0.0.1:4,h2=10.0.0.2:4", "h1:2", ",", "a=b=c:1", "h:-1", "h:99999999999999999999", "=:0", " h1 : 3 "} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		var l HostList
		if err := l.UnmarshalText([]byte(text)); err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error %q", err)
			}
			return
		}
		if len(l) == 0 {
			t.Fatalf("%q parsed to an empty list without error", text)
		}
		if err := (Config{Hosts: l}).Validate(); err == nil {
			for _, h := range l {
				if h.Name == "" || h.Slots < 0 {
					t.Errorf("Validate accepted host %+v from %q", h, text)
				}
			}
		}
	})
}
