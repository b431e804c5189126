package guestagent_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snowflock/snowflock/egosf/guestagent/agenttest"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// prog is a raw program connection to the agent.
type prog struct {
	t    *testing.T
	conn net.Conn
	r    *guestproto.Reader
}

func dial(t *testing.T, h *agenttest.Host) *prog {
	t.Helper()
	conn, err := net.Dial("unix", h.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &prog{t: t, conn: conn, r: guestproto.NewReader(conn)}
}

func (p *prog) send(m *guestproto.Message) {
	p.t.Helper()
	if err := guestproto.Write(p.conn, m); err != nil {
		p.t.Fatal(err)
	}
}

func (p *prog) recv() *guestproto.Message {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := p.r.Read()
	if err != nil {
		p.t.Fatalf("program: %v", err)
	}
	return m
}

func call(t *testing.T, h *agenttest.Host, m *guestproto.Message) *guestproto.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := h.Call(ctx, m)
	if err != nil {
		t.Fatalf("host call %s: %v", m.Op, err)
	}
	return r
}

func TestForwardRewritesIDsAndRoutesReplies(t *testing.T) {
	h := agenttest.Start(t, nil)
	a, b := dial(t, h), dial(t, h)
	a.send(&guestproto.Message{ID: 1, Op: guestproto.OpRequestTicket, N: 2})
	ra := h.Next()
	b.send(&guestproto.Message{ID: 1, Op: guestproto.OpJoin, Ticket: "t-b"})
	rb := h.Next()
	if ra.ID == rb.ID {
		t.Fatalf("two programs' requests share port ID %d", ra.ID)
	}
	if ra.N != 2 || rb.Ticket != "t-b" {
		t.Fatalf("forwarded requests changed: %+v %+v", ra, rb)
	}
	// Out of order: b's reply first.
	h.Send(&guestproto.Message{ID: rb.ID, Op: rb.Op, Reply: true, Exits: []guestproto.Exit{{CloneID: 1}}})
	h.Send(&guestproto.Message{ID: ra.ID, Op: ra.Op, Reply: true, Ticket: "t-a", Granted: 2})
	if m := b.recv(); m.ID != 1 || len(m.Exits) != 1 {
		t.Errorf("b got %+v, want its join reply under ID 1", m)
	}
	if m := a.recv(); m.ID != 1 || m.Ticket != "t-a" || m.Granted != 2 {
		t.Errorf("a got %+v, want its ticket under ID 1", m)
	}
}

func TestHelloReportsPendingRequests(t *testing.T) {
	h := agenttest.Start(t, nil)
	p := dial(t, h)
	p.send(&guestproto.Message{ID: 7, Op: guestproto.OpClone, Ticket: "t"})
	req := h.Next()
	r := call(t, h, &guestproto.Message{Op: guestproto.OpHello})
	if r.Agent != "sfguest test" || !slices.Equal(r.Pending, []uint64{req.ID}) {
		t.Fatalf("hello reply %+v, want agent \"sfguest test\" and pending [%d]", r, req.ID)
	}
	h.Send(&guestproto.Message{ID: req.ID, Reply: true})
	p.recv()
	if r := call(t, h, &guestproto.Message{Op: guestproto.OpHello}); len(r.Pending) != 0 {
		t.Fatalf("pending after the reply: %v", r.Pending)
	}
}

func TestExec(t *testing.T) {
	h := agenttest.Start(t, nil)
	r := call(t, h, &guestproto.Message{Op: guestproto.OpExec, Args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
	if r.Error != nil || r.ExitCode != 3 || string(r.Output) != "out\nerr\n" {
		t.Errorf("exec reply %+v (output %q), want exit 3 and both streams", r, r.Output)
	}
	if !strings.Contains(h.Console(), "out\nerr\n") {
		t.Errorf("console got %q, want the command's output", h.Console())
	}
	r = call(t, h, &guestproto.Message{Op: guestproto.OpExec, Args: []string{"sh", "-c", "head -c 300000 /dev/zero"}})
	if len(r.Output) != guestproto.MaxOutput {
		t.Errorf("output of %d bytes, want it cut at %d", len(r.Output), guestproto.MaxOutput)
	}
	r = call(t, h, &guestproto.Message{Op: guestproto.OpExec, Args: []string{"sh", "-c", "kill -9 $$"}})
	if r.ExitCode != 128+9 {
		t.Errorf("killed command: exit %d, want 137", r.ExitCode)
	}
	for args, want := range map[string]error{
		"":                     guestproto.ErrInvalidArgument,
		"no-such-command-here": guestproto.ErrNotFound,
	} {
		r = call(t, h, &guestproto.Message{Op: guestproto.OpExec, Args: strings.Fields(args)})
		if r.Error == nil || !errors.Is(r.Error, want) {
			t.Errorf("exec %q: error %v, want %v", args, r.Error, want)
		}
	}
}

func TestProgramsCannotSendHostRequests(t *testing.T) {
	h := agenttest.Start(t, nil)
	p := dial(t, h)
	for i, op := range []string{guestproto.OpHello, guestproto.OpExec, guestproto.OpIdentity} {
		p.send(&guestproto.Message{ID: uint64(i + 1), Op: op, Args: []string{"true"},
			Identity: &guestproto.Identity{Hostname: "evil"}})
		if m := p.recv(); m.ID != uint64(i+1) || !errors.Is(m.Error, guestproto.ErrPermissionDenied) {
			t.Errorf("%s from a program: %+v, want permission_denied", op, m)
		}
	}
	// Nothing reached the host: the next request it sees is this one.
	p.send(&guestproto.Message{ID: 9, Op: guestproto.OpWhoAmI})
	if m := h.Next(); m.Op != guestproto.OpWhoAmI {
		t.Errorf("host saw %s, want only the whoami", m.Op)
	}
	if ids := h.Identities(); len(ids) != 0 {
		t.Errorf("a program made the agent take identity %+v", ids)
	}
}

func TestIdentityTakenBeforeCloneReply(t *testing.T) {
	h := agenttest.Start(t, nil)
	p := dial(t, h)
	id := &guestproto.Identity{Hostname: "clone-2", Seed: []byte{1, 2, 3, 4}}
	for _, op := range []string{guestproto.OpClone, guestproto.OpCheckpointParent, guestproto.OpWhoAmI} {
		p.send(&guestproto.Message{ID: 5, Op: op, Ticket: "t"})
		req := h.Next()
		before := len(h.Identities())
		h.Send(&guestproto.Message{ID: req.ID, Op: op, Reply: true, CloneID: 2, Identity: id})
		m := p.recv()
		if m.CloneID != 2 || m.Identity == nil || m.Identity.Hostname != "clone-2" {
			t.Fatalf("%s reply %+v", op, m)
		}
		if op != guestproto.OpWhoAmI && m.Identity.Seed != nil {
			t.Errorf("%s reply passed the RNG seed on to the program", op)
		}
		got := h.Identities()[before:]
		switch want := op != guestproto.OpWhoAmI; {
		case want && (len(got) != 1 || got[0].Hostname != "clone-2"):
			t.Errorf("%s: identities taken before the reply %+v, want clone-2", op, got)
		case !want && len(got) != 0:
			t.Errorf("%s reply carrying an identity applied it: %+v", op, got)
		}
	}
	r := call(t, h, &guestproto.Message{Op: guestproto.OpIdentity, Identity: &guestproto.Identity{Hostname: "op-clone"}})
	if r.Error != nil || h.Identities()[len(h.Identities())-1].Hostname != "op-clone" {
		t.Errorf("identity request: %+v, identities %+v", r, h.Identities())
	}
	if r := call(t, h, &guestproto.Message{Op: guestproto.OpIdentity}); !errors.Is(r.Error, guestproto.ErrInvalidArgument) {
		t.Errorf("identity request without identity: %+v", r)
	}
}

// A clone resumes with the parent's pending request; its reply comes on
// the clone's new host connection. EOF while disconnected fails nothing.
func TestPendingRequestSurvivesReconnect(t *testing.T) {
	h := agenttest.Start(t, nil)
	p := dial(t, h)
	p.send(&guestproto.Message{ID: 3, Op: guestproto.OpClone, Ticket: "t"})
	req := h.Next()
	h.Disconnect()
	time.Sleep(50 * time.Millisecond)                           // the agent reads EOF several times
	p.send(&guestproto.Message{ID: 4, Op: guestproto.OpWhoAmI}) // waits for the host
	h.Reconnect()
	who := h.Next()
	if r := call(t, h, &guestproto.Message{Op: guestproto.OpHello}); !slices.Equal(r.Pending, []uint64{req.ID, who.ID}) {
		t.Fatalf("hello after reconnect: pending %v, want [%d %d]", r.Pending, req.ID, who.ID)
	}
	h.Send(&guestproto.Message{ID: req.ID, Op: req.Op, Reply: true, CloneID: 1, Identity: &guestproto.Identity{Hostname: "c1"}})
	h.Send(&guestproto.Message{ID: who.ID, Op: who.Op, Reply: true, VM: "vm-c1", CloneID: 1})
	if m := p.recv(); m.ID != 3 || m.CloneID != 1 {
		t.Errorf("clone reply after reconnect: %+v", m)
	}
	if m := p.recv(); m.ID != 4 || m.VM != "vm-c1" {
		t.Errorf("whoami reply after reconnect: %+v", m)
	}
}

func TestReplyToClosedProgramIsDropped(t *testing.T) {
	h := agenttest.Start(t, nil)
	p := dial(t, h)
	p.send(&guestproto.Message{ID: 1, Op: guestproto.OpJoin, Ticket: "t"})
	req := h.Next()
	p.conn.Close()
	time.Sleep(20 * time.Millisecond)
	h.Send(&guestproto.Message{ID: req.ID, Reply: true})
	h.Send(&guestproto.Message{ID: 999, Reply: true}) // to nothing at all
	if r := call(t, h, &guestproto.Message{Op: guestproto.OpHello}); len(r.Pending) != 0 {
		t.Errorf("pending %v after the reply was dropped", r.Pending)
	}
	q := dial(t, h)
	q.send(&guestproto.Message{ID: 1, Op: guestproto.OpWhoAmI})
	h.Send(&guestproto.Message{ID: h.Next().ID, Reply: true, VM: "v"})
	if m := q.recv(); m.VM != "v" {
		t.Errorf("agent stopped relaying: %+v", m)
	}
}

func TestMalformedInput(t *testing.T) {
	h := agenttest.Start(t, nil)
	// Garbage on the port, a cut frame among it: the agent skips to the
	// next good frame.
	h.WriteRaw([]byte("noise SFG\x01\x00\x00\x00\x05\x00\x00\x00\x00{}}}} more noise"))
	if r := call(t, h, &guestproto.Message{Op: guestproto.OpHello}); r.Agent == "" {
		t.Errorf("hello after garbage: %+v", r)
	}
	raw := dial(t, h)
	raw.conn.Write([]byte("this is not a frame"))
	raw.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.r.Read(); err == nil {
		t.Error("agent answered a program's garbage instead of disconnecting it")
	}
	good := dial(t, h)
	good.send(&guestproto.Message{ID: 1, Op: guestproto.OpWhoAmI})
	h.Send(&guestproto.Message{ID: h.Next().ID, Reply: true, VM: "v"})
	if m := good.recv(); m.VM != "v" {
		t.Errorf("after a bad program: %+v", m)
	}
}
