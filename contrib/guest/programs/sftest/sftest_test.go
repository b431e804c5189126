package main

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestagent/agenttest"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// parentOf answers as sfld does for a parent whose clones 1 and 2 exited
// with results.
func parentOf(results ...string) agenttest.Handler {
	return func(req *guestproto.Message) *guestproto.Message {
		r := &guestproto.Message{Ticket: "t-1", Granted: len(results) + 1, Checkpoint: "cp-1"}
		if req.Op == guestproto.OpJoin {
			for i, res := range results {
				r.Exits = append(r.Exits, guestproto.Exit{CloneID: i + 1, Result: []byte(res)})
			}
		}
		return r
	}
}

// runScenario runs a scenario in the parent and returns its report as JSON
// decoded into a generic value.
func runScenario(t *testing.T, h agenttest.Handler, name string, args ...string) any {
	t.Helper()
	sock := agenttest.Start(t, h).Socket
	t.Setenv(egosf.GuestSocketEnv, sock)
	rep, err := run(context.Background(), scenarios[name], args)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	b, _ := json.Marshal(rep)
	var v any
	json.Unmarshal(b, &v)
	return v
}

func TestParentReports(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string
		results []string
		want    string
	}{
		{"ids", []string{"3"}, []string{"2", "1"}, `{"granted":3,"ids":[0,1,2]}`},
		{"checkpoint", nil, nil, `{"checkpoint":"cp-1","clone_id":0}`},
		{"create-clones", []string{"cp-1", "2"}, []string{"resumed-at-checkpoint:1"},
			`{"granted":2,"created":2,"exits":[{"clone_id":1,"result":"resumed-at-checkpoint:1"}]}`},
	} {
		var want any
		json.Unmarshal([]byte(c.want), &want)
		if got := runScenario(t, parentOf(c.results...), c.name, c.args...); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: report %v, want %v", c.name, got, want)
		}
	}
}

func TestBadArguments(t *testing.T) {
	sock := agenttest.Start(t, parentOf()).Socket
	t.Setenv(egosf.GuestSocketEnv, sock)
	for name, args := range map[string][]string{"ids": nil, "kill": {"0"}, "create-clones": {"cp-1"}} {
		if _, err := run(context.Background(), scenarios[name], args); err == nil {
			t.Errorf("%s %v: no error", name, args)
		}
	}
}

func TestFillAndUniform(t *testing.T) {
	b := make([]byte, 1000)
	fill(b, 'B')
	if uniform(b) != "B" {
		t.Errorf("fill left %q", uniform(b))
	}
	b[999] = 'A'
	if uniform(b) != "mixed" || uniform(nil) != "mixed" {
		t.Error("uniform missed a different byte")
	}
}
