package main

import (
	"testing"

	"github.com/snowflock/snowflock/allocator/static"
)

func TestParseHostfile(t *testing.T) {
	hosts, err := parseHostfile([]byte("# cluster\nn1 slots=4\n\nn2   # one slot\nn3 slots=2 max_slots=8\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"n1": 4, "n2": 1, "n3": 2}
	if len(hosts) != 3 {
		t.Fatalf("parsed %+v", hosts)
	}
	for _, h := range hosts {
		if want[h.Name] != h.Slots || h.Address != h.Name {
			t.Errorf("host %+v, want %d slots", h, want[h.Name])
		}
	}
	for _, bad := range []string{"", "# nothing\n", "n1 slots=0\n", "n1 slots=x\n"} {
		if _, err := parseHostfile([]byte(bad)); err == nil {
			t.Errorf("parseHostfile(%q) accepted", bad)
		}
	}
}

func FuzzParseHostfile(f *testing.F) {
	f.Add([]byte("n1 slots=4\nn2\n"))
	f.Add([]byte("# c\n\tn slots=99999999999999999999\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		hosts, err := parseHostfile(text)
		if err != nil {
			return
		}
		cfg := static.Config{Hosts: hosts}
		for _, h := range hosts {
			if h.Slots < 1 || h.Name == "" {
				t.Errorf("bad host accepted: %+v", h)
			}
		}
		_ = cfg.Validate()
	})
}
