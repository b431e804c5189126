package agenttest

import (
	"errors"
	"fmt"
	"sync"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// Sfld answers guest API requests as sfld would for the parent VM "vm-7"
// of family "fam-1": request_ticket grants "t-1" with at most 3 clones
// (none_available above 8), clone returns 0 (the parent's side), join
// reports clone 1 exited with "one" and clone 2 killed, checkpoint_parent
// makes "cp-1"; other tickets and checkpoints are not_found. Its Handle
// method is a Handler.
type Sfld struct {
	mu       sync.Mutex
	requests int
	lastExit []byte
}

// Requests is how many requests reached sfld.
func (s *Sfld) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// LastExit is the result of the last exit request.
func (s *Sfld) LastExit() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastExit
}

// Handle answers one request.
func (s *Sfld) Handle(req *guestproto.Message) *guestproto.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	r := &guestproto.Message{}
	notFound := func(what string) *guestproto.Message {
		r.Error = guestproto.NewError("not_found", fmt.Errorf("no %s %q of this VM", what, req.Ticket+req.Checkpoint))
		return r
	}
	switch req.Op {
	case guestproto.OpRequestTicket:
		if req.N > 8 {
			r.Error = guestproto.NewError("none_available", errors.New("only 3 slots free"))
		}
		r.Ticket, r.Granted = "t-1", min(req.N, 3)
	case guestproto.OpClone, guestproto.OpJoin, guestproto.OpKill, guestproto.OpRelease:
		if req.Ticket != "t-1" {
			return notFound("ticket")
		}
		r.Exits = []guestproto.Exit{{CloneID: 1, Result: []byte("one")}, {CloneID: 2, Killed: true, Reason: "vm died"}}
	case guestproto.OpCheckpointParent:
		r.Checkpoint = "cp-1"
	case guestproto.OpCreateClones:
		if req.Checkpoint != "cp-1" {
			return notFound("checkpoint")
		}
		r.Granted = 2
	case guestproto.OpExit:
		s.lastExit = req.Result
	case guestproto.OpWhoAmI:
		r.VM, r.Family, r.CloneID = "vm-7", "fam-1", 0
	}
	return r
}
