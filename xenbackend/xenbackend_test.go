package xenbackend

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/clonesvc"
)

func TestParseEnded(t *testing.T) {
	out := `Name                                        ID   Mem VCPUs	State	Time(s)
Domain-0                                     0  1536     2     r-----      18.0
sf-vm-1                                      3   256     1     -b----       5.7
sf-vm-2                                      4   256     1     ---s--       3.0
sf-vm-3                                      5   256     1     ----c-       3.0
sf-vm-4                                      6   256     1     --p---       1.0
garbage line
`
	got := parseEnded(out)
	if want := map[uint32]bool{4: true, 5: true}; !maps.Equal(got, want) {
		t.Fatalf("parseEnded = %v, want %v", got, want)
	}
}

func TestXLConfig(t *testing.T) {
	m := machine{Type: TypePV, CPUs: 2, MemoryMiB: 256, Kernel: "/k", Initrd: "/i", Append: "quiet"}
	if err := m.validate(); err != nil {
		t.Fatal(err)
	}
	cfg := string(m.xlConfig("sf-vm-1", "h1"))
	for _, want := range []string{`name = "sf-vm-1"`, `type = "pv"`, `kernel = "/k"`, `ramdisk = "/i"`,
		`extra = "console=hvc0 quiet sf.hostname=h1"`, "memory = 256", "maxmem = 256", "vcpus = 2", `on_crash = "destroy"`} {
		if !strings.Contains(cfg, want+"\n") {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	for _, bad := range []machine{
		{Type: "hvm", CPUs: 1, MemoryMiB: 256, Kernel: "/k"},
		{Type: TypePV, CPUs: 1, MemoryMiB: 256},
		{Type: TypePV, CPUs: 1, MemoryMiB: 256, Kernel: "k"},
		{Type: TypePV, CPUs: 1, MemoryMiB: 256, Kernel: "/k", Append: `x" kernel = "/evil`},
		{Type: TypePV, CPUs: 1, MemoryMiB: 256, Kernel: "/k", Append: "a\nb"},
		{Type: TypePV, CPUs: 0, MemoryMiB: 256, Kernel: "/k"},
		{Type: TypePV, CPUs: 1, MemoryMiB: 8, Kernel: "/k"},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("machine %+v validated", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("empty config: %v", err)
	}
	for _, c := range []Config{{Type: "hvm"}, {MemoryMiB: 1}, {CPUs: 999}, {Kernel: `/a"b`}, {TargetMiB: 300, MemoryMiB: 256}} {
		if err := c.Validate(); err == nil {
			t.Errorf("config %+v validated", c)
		}
	}
}

func TestDecodeRecord(t *testing.T) {
	good := recordState{ID: "vm-1", Dir: "/var/lib/x/vm-1", Name: "sf-vm-1", DomID: 7,
		Machine: machine{Type: TypePV, CPUs: 1, MemoryMiB: 256, Kernel: "/k"}}
	enc := func(st recordState) clonesvc.Record {
		b, _ := json.Marshal(st)
		return clonesvc.Record{Backend: Name, Version: recordVersion, State: b}
	}
	if _, err := decodeRecord(enc(good)); err != nil {
		t.Fatalf("good record: %v", err)
	}
	bad := []clonesvc.Record{
		{Backend: "kvm", Version: recordVersion, State: enc(good).State},
		{Backend: Name, Version: 99, State: enc(good).State},
		{Backend: Name, Version: recordVersion, State: []byte("{")},
	}
	for _, mut := range []func(*recordState){
		func(s *recordState) { s.Name = "Domain-0" },
		func(s *recordState) { s.DomID = 0 },
		func(s *recordState) { s.Dir = "relative" },
		func(s *recordState) { s.Dir = "/" },
		func(s *recordState) { s.Hostname = "bad host" },
		func(s *recordState) { s.Machine.Kernel = "" },
	} {
		st := good
		mut(&st)
		bad = append(bad, enc(st))
	}
	for i, r := range bad {
		if _, err := decodeRecord(r); err == nil {
			t.Errorf("bad record %d decoded", i)
		}
	}
}
