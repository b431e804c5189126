package kvmbackend

import (
	"encoding/json"
	"testing"

	"github.com/snowflock/snowflock/clonesvc"
)

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1234 (qemu-system-x86) S 1 1234 1234 0 -1 4194560 1 0 0 0 5 3 0 0 20 0 3 0 98765 1000 100 18446744073709551615\n"))
	f.Add([]byte("1 (a) b) c) R 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0"))
	f.Add([]byte("1 (x"))
	f.Fuzz(func(t *testing.T, data []byte) {
		start, state, err := parseStat(data)
		if err != nil && (start != 0 || state != 0) {
			t.Fatalf("error %v with results %d %c", err, start, state)
		}
	})
}

func FuzzDecodeMachine(f *testing.F) {
	good, _ := json.Marshal(machine{Type: MachineQ35, Accel: AccelTCG, CPUs: 1, MemoryMiB: 256})
	f.Add(good)
	f.Add([]byte(`{"type":"microvm","accel":"kvm","cpus":2,"memory_mib":512,"kernel":"/k","append":"quiet"}`))
	f.Add([]byte(`{"type":"q35","accel":"tcg","cpus":1,"memory_mib":16,"initrd":"/i"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMachine(data)
		if err != nil {
			return
		}
		// A machine that decodes builds a command line without panicking.
		l := launch{machine: m, ID: "x", Dir: "/d", MemPath: "/d/mem"}
		if len(l.args()) == 0 {
			t.Fatal("no arguments")
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	st, _ := json.Marshal(recordState{ID: "vm", Dir: "/run/sf/vm", PID: 42, StartTime: 7, MemPath: "/run/sf/vm/mem", Share: true,
		Machine: machine{Type: MachineQ35, Accel: AccelTCG, CPUs: 1, MemoryMiB: 256}})
	f.Add(st, 1)
	f.Add([]byte(`{"id":"a","dir":"/","pid":1}`), 1)
	f.Add([]byte(`{}`), 2)
	f.Fuzz(func(t *testing.T, state []byte, version int) {
		rs, err := decodeRecord(clonesvc.Record{Backend: Name, Version: version, State: state})
		if err != nil {
			return
		}
		if rs.PID <= 0 || rs.ID == "" || rs.Dir == "/" {
			t.Fatalf("accepted record %+v", rs)
		}
	})
}
