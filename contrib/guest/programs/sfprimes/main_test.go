package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestagent/agenttest"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// The parent's side of a 3-VM run: clones 1 and 2 exit with their shares'
// counts (computed here as they would be in the clones); the parent adds
// its own and must print π(upto).
func TestParentSumsTheShares(t *testing.T) {
	const upto = 100_000
	sock := agenttest.Start(t, func(req *guestproto.Message) *guestproto.Message {
		r := &guestproto.Message{Ticket: "t-1", Granted: 3}
		if req.Op == guestproto.OpClone {
			r.Timing = &guestproto.Timing{PauseMS: 12, CloneStartMS: []float64{80, 90}}
		}
		if req.Op == guestproto.OpJoin {
			for id := 2; id >= 1; id-- {
				b, _ := json.Marshal(count(id, 3, upto))
				r.Exits = append(r.Exits, guestproto.Exit{CloneID: id, Result: b})
			}
		}
		return r
	}).Socket
	t.Setenv(egosf.GuestSocketEnv, sock)
	r, err := run(context.Background(), 4, upto, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Primes != countPrimes(2, upto) || r.VMs != 3 || len(r.Shares) != 3 {
		t.Fatalf("report %+v, want π(%d) = %d from 3 shares", r, upto, countPrimes(2, upto))
	}
	for i, s := range r.Shares {
		if s.CloneID != i {
			t.Errorf("share %d is clone %d's", i, s.CloneID)
		}
	}
	var out bytes.Buffer
	r.print(&out)
	if !strings.Contains(out.String(), "primes in [2, 100000]: 9592") || !strings.Contains(out.String(), "90.0") {
		t.Errorf("table:\n%s", out.String())
	}
}
