package main

/*
#include <stdlib.h>
#include "egosf_impl.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// The guest API (sf_*): one connection to the in-guest agent per process,
// opened on first use and reopened after it is lost.

// connectTimeout bounds connecting to the agent (a local unix socket).
const connectTimeout = 10 * time.Second

var guestConn struct {
	mu sync.Mutex
	g  *egosf.Guest
}

func guest() (*egosf.Guest, error) {
	guestConn.mu.Lock()
	defer guestConn.mu.Unlock()
	if guestConn.g != nil {
		return guestConn.g, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	g, err := egosf.OpenGuest(ctx)
	if err != nil {
		return nil, err
	}
	guestConn.g = g
	return g, nil
}

// guestDone forgets g when err says its connection is lost, so that the
// next call reconnects, and returns err's code.
func guestDone(g *egosf.Guest, err error) C.int {
	if err == nil {
		return codeOK
	}
	if errors.Is(err, guestproto.ErrUnavailable) {
		guestConn.mu.Lock()
		if guestConn.g == g {
			guestConn.g = nil
			g.Close()
		}
		guestConn.mu.Unlock()
	}
	return fail(err)
}

// guestCall runs f on the process's agent connection.
func guestCall(f func(ctx context.Context, g *egosf.Guest) error) C.int {
	g, err := guest()
	if err != nil {
		return fail(err)
	}
	return guestDone(g, f(context.Background(), g))
}

// ticketCall reads a ticket argument of op, then runs f with it on the
// process's agent connection.
func ticketCall(op string, ticket *C.char, f func(ctx context.Context, g *egosf.Guest, t string) error) C.int {
	t, err := goString(ticket, op+": ticket")
	if err != nil {
		return fail(err)
	}
	return guestCall(func(ctx context.Context, g *egosf.Guest) error { return f(ctx, g, t) })
}

//export sf_request_ticket
func sf_request_ticket(n C.int, ticket **C.char, granted *C.int) (rc C.int) {
	defer guard(&rc)
	if ticket == nil || granted == nil {
		return fail(errInvalid("sf_request_ticket: ticket or granted is NULL"))
	}
	*ticket, *granted = nil, 0
	if n <= 0 {
		return fail(errInvalid(fmt.Sprintf("sf_request_ticket: n = %d, want at least 1", int(n))))
	}
	return guestCall(func(ctx context.Context, g *egosf.Guest) error {
		t, err := g.RequestTicket(ctx, int(n))
		if err == nil {
			*ticket, *granted = C.CString(t.ID), C.int(t.Granted)
		}
		return err
	})
}

//export sf_clone
func sf_clone(ticket *C.char, id *C.int) (rc C.int) {
	defer guard(&rc)
	if id == nil {
		return fail(errInvalid("sf_clone: id is NULL"))
	}
	*id = -1
	return ticketCall("sf_clone", ticket, func(ctx context.Context, g *egosf.Guest, t string) error {
		n, err := g.Clone(ctx, t)
		if err == nil {
			*id = C.int(n)
		}
		return err
	})
}

//export sf_join
func sf_join(ticket *C.char, exits **C.egosf_exits) (rc C.int) {
	defer guard(&rc)
	if exits == nil {
		return fail(errInvalid("sf_join: exits is NULL"))
	}
	*exits = nil
	return ticketCall("sf_join", ticket, func(ctx context.Context, g *egosf.Guest, t string) error {
		xs, err := g.Join(ctx, t)
		if err != nil {
			return err
		}
		e := C.egosf__exits_new(C.int(len(xs)))
		for i, x := range xs {
			killed := 0
			if x.Killed {
				killed = 1
			}
			C.egosf__exits_set(e, C.int(i), C.int(x.CloneID), C.int(killed), C.CString(x.Reason), C.CBytes(x.Result), C.size_t(len(x.Result)))
		}
		*exits = e
		return nil
	})
}

//export sf_kill
func sf_kill(ticket *C.char) (rc C.int) {
	defer guard(&rc)
	return ticketCall("sf_kill", ticket, func(ctx context.Context, g *egosf.Guest, t string) error { return g.Kill(ctx, t) })
}

//export sf_release_ticket
func sf_release_ticket(ticket *C.char) (rc C.int) {
	defer guard(&rc)
	return ticketCall("sf_release_ticket", ticket, func(ctx context.Context, g *egosf.Guest, t string) error { return g.Release(ctx, t) })
}

//export sf_exit
func sf_exit(res unsafe.Pointer, n C.size_t) (rc C.int) {
	defer guard(&rc)
	if res == nil && n > 0 {
		return fail(errInvalid(fmt.Sprintf("sf_exit: result is NULL but len is %d", uint64(n))))
	}
	if n > guestproto.MaxResult {
		return fail(errInvalid(fmt.Sprintf("sf_exit: result of %d bytes exceeds %d", uint64(n), guestproto.MaxResult)))
	}
	var data []byte
	if n > 0 {
		data = C.GoBytes(res, C.int(n))
	}
	return guestCall(func(ctx context.Context, g *egosf.Guest) error { return g.Exit(ctx, data) })
}

//export sf_checkpoint_parent
func sf_checkpoint_parent(checkpoint **C.char, id *C.int) (rc C.int) {
	defer guard(&rc)
	if checkpoint == nil || id == nil {
		return fail(errInvalid("sf_checkpoint_parent: checkpoint or id is NULL"))
	}
	*checkpoint, *id = nil, -1
	return guestCall(func(ctx context.Context, g *egosf.Guest) error {
		cp, n, err := g.CheckpointParent(ctx)
		if err == nil {
			*checkpoint, *id = C.CString(cp), C.int(n)
		}
		return err
	})
}

//export sf_create_clones
func sf_create_clones(checkpoint, ticket *C.char, created *C.int) (rc C.int) {
	defer guard(&rc)
	if created == nil {
		return fail(errInvalid("sf_create_clones: created is NULL"))
	}
	*created = 0
	cp, err := goString(checkpoint, "sf_create_clones: checkpoint")
	if err != nil {
		return fail(err)
	}
	t, err := goString(ticket, "sf_create_clones: ticket")
	if err != nil {
		return fail(err)
	}
	return guestCall(func(ctx context.Context, g *egosf.Guest) error {
		n, err := g.CreateClones(ctx, cp, t)
		if err == nil {
			*created = C.int(n)
		}
		return err
	})
}
