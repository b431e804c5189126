package qmp

import "testing"

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`,
		`{"return": {}, "id": "1"}`,
		`{"return": {"status": "running", "running": true}, "id": "17"}`,
		`{"error": {"class": "CommandNotFound", "desc": "The command x has not been found"}, "id": "2"}`,
		`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "STOP"}`,
		`{"event": "MIGRATION", "data": {"status": "completed"}}`,
		`{"return": null, "id": "3"}`,
		`{"return": 1}`,
		`{"id": 5, "return": {}}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, kind, err := parseLine(line)
		if err != nil {
			if kind != 0 {
				t.Fatalf("error %v with kind %d", err, kind)
			}
			return
		}
		switch kind {
		case kindGreeting:
			if m.Greeting == nil {
				t.Fatal("greeting without QMP member")
			}
		case kindReply:
			if m.ID == nil || (m.Return == nil && m.Error == nil) {
				t.Fatalf("reply without id or body: %+v", m)
			}
		case kindEvent:
			if m.Event == "" {
				t.Fatal("event without name")
			}
		default:
			t.Fatalf("no error and unknown kind %d", kind)
		}
	})
}
