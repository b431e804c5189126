package xenbackend

import (
	"encoding/json"
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/clonesvc"
)

func TestParseList(t *testing.T) {
	out := `Name                                        ID   Mem VCPUs	State	Time(s)
Domain-0                                     0  1536     2     r-----      18.0
sf-vm-1                                      3   256     1     -b----       5.7
sf-vm-2                                      4   256     1     ---s--       3.0
sf-vm-3                                      5   256     1     ---sc-       3.0
sf-vm-4                                      6   256     1     --p---       1.0
sf-vm-5                                      7   256     1     ---ss-       9.0
sf-vm-6                                      8   256     1     ---sr-       9.0
sf-vm-7                                      9   256     1     ----c-       3.0
garbage line
sf-vm-8                                      x   256     1     ---s--       3.0
`
	got := parseList(out)
	want := map[uint32]domainState{4: domainEnded, 5: domainEnded, 7: domainSuspended, 8: domainEnded, 9: domainEnded}
	if !maps.Equal(got, want) {
		t.Fatalf("parseList = %v, want %v", got, want)
	}
}

func TestXLConfig(t *testing.T) {
	m := machine{Type: TypePV, CPUs: 2, MemoryMiB: 256, Kernel: "/k", Initrd: "/i", Append: "quiet"}
	if err := m.validate(); err != nil {
		t.Fatal(err)
	}
	cfg := string(m.xlConfig("sf-vm-1", "h1", nil))
	if strings.Contains(cfg, "vif") {
		t.Errorf("config without a nic has a vif:\n%s", cfg)
	}
	if got := string(m.xlConfig("sf-vm-1", "h1", &nic{MAC: "00:16:3e:01:02:03", Bridge: "xenbr0"})); !strings.Contains(got, `vif = [ "mac=00:16:3e:01:02:03,bridge=xenbr0" ]`+"\n") {
		t.Errorf("config with a nic lacks its vif:\n%s", got)
	}
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
	for _, c := range []Config{{}, {Bridge: "xenbr0"}, {Bridge: "br-snow_1.2"}} {
		if err := c.Validate(); err != nil {
			t.Fatalf("config %+v: %v", c, err)
		}
	}
	for _, c := range []Config{{Type: "hvm"}, {Boot: clonesvc.Boot{MemoryMiB: 1}}, {Boot: clonesvc.Boot{CPUs: 999}}, {Boot: clonesvc.Boot{Kernel: `/a"b`}},
		{TargetMiB: 300, Boot: clonesvc.Boot{MemoryMiB: 256}},
		{Bridge: "br,script=/evil"}, {Bridge: "a-name-of-16-chr"}, {Bridge: "x y"}, {Bridge: ".."}} {
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
		func(s *recordState) { s.MAC = "00:16:3e:zz:00:01" },
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

// FuzzParseList: whatever xl prints, parseList neither panics nor reports
// a domain whose line it did not read as shut down, crashed or suspended.
func FuzzParseList(f *testing.F) {
	f.Add("Name ID Mem VCPUs\tState\tTime(s)\nsf-vm-1 3 256 1 ---ss- 1.0\n")
	f.Add("d 4294967295 1 1 ---sc- 0\nd 4294967296 1 1 ---s-- 0\n")
	f.Add("a b c d e f\n\x00\xff ---s-- ---s-- ---s-- ---s-- ---s--")
	f.Fuzz(func(t *testing.T, out string) {
		for id, st := range parseList(out) {
			if st != domainEnded && st != domainSuspended {
				t.Fatalf("domain %d has state %d", id, st)
			}
			if !strings.Contains(out, strconv.FormatUint(uint64(id), 10)) {
				t.Fatalf("domain %d is not in the output", id)
			}
		}
	})
}

// TestMACs: a VM's MAC is Xen-prefixed, derived from its ID, and unlike
// the MACs other VMs of the backend hold and those the host's vifs use;
// a freed MAC is given again.
func TestMACs(t *testing.T) {
	b := &Backend{macs: map[string]string{}}
	first := macFor("vm-1", 0)
	if !strings.HasPrefix(first, "00:16:3e:") || checkMAC(first) != nil || first[9] > '7' {
		t.Fatalf("macFor = %q: want 00:16:3e:XX:XX:XX with the 4th byte's top bit clear", first)
	}
	mac, err := b.pickMAC("vm-1", nil)
	if err != nil || mac != first {
		t.Fatalf("pickMAC(vm-1) = %q, %v; want %q", mac, err, first)
	}
	// Another VM whose first candidate is taken (here by the host) gets
	// the next one; none equals a held or used MAC.
	used := map[string]bool{macFor("vm-2", 0): true}
	mac2, err := b.pickMAC("vm-2", used)
	if err != nil || mac2 == macFor("vm-2", 0) || mac2 == first {
		t.Fatalf("pickMAC(vm-2) = %q, %v", mac2, err)
	}
	// The same ID again (a second VM of that name cannot hold vm-1's).
	again, err := b.pickMAC("vm-1", nil)
	if err != nil || again == first {
		t.Fatalf("second pickMAC(vm-1) = %q, %v: want another MAC than %q", again, err, first)
	}
	b.releaseMAC(first, "vm-2") // not vm-2's: kept
	if b.macs[first] != "vm-1" {
		t.Fatalf("releaseMAC by another VM freed %s", first)
	}
	b.releaseMAC(first, "vm-1")
	if mac, _ := b.pickMAC("vm-3", map[string]bool{}); mac == "" {
		t.Fatal("no MAC for vm-3")
	}
	for _, bad := range []string{"00:16:3E:01:02:03", "00:16:3e:01:02", "zz:16:3e:01:02:03", "00-16-3e-01-02-03"} {
		if checkMAC(bad) == nil {
			t.Errorf("checkMAC(%q) accepted it", bad)
		}
	}
}
