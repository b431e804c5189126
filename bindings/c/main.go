// Command libegosf is the egosf Go API exported as a C library: built with
// -buildmode=c-shared into libegosf.so, declared by the hand-written
// egosf.h (see it for the ABI, the error and the thread-safety rules).
//
// Go values never cross to C: handles are IDs into a table of Go clients,
// and every object returned to C is a C copy (objects.c frees it). Every
// exported function recovers panics into EGOSF_EINTERNAL and records its
// error message for egosf_last_error on the calling thread: a call from C
// runs its Go code locked to the calling thread, so the C thread-local
// buffer that objects.c keeps is the caller's.
package main

/*
#cgo CFLAGS: -Wall -Wextra -Werror
#include <stdlib.h>
#include "egosf_impl.h"
*/
import "C"

import (
	"context"
	"fmt"
	"math"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/config"
)

func main() {}

// fail records err as the calling thread's last error and returns its
// code. Messages are one line.
func fail(err error) C.int {
	setError(strings.Join(strings.Fields(err.Error()), " "))
	return C.int(codeOf(err))
}

// setError copies msg into the calling thread's error buffer. It hands C a
// C copy, never Go memory.
func setError(msg string) {
	cs := C.CString(msg)
	C.egosf__set_error(cs, C.size_t(len(msg)))
	C.free(unsafe.Pointer(cs))
}

// result converts err into the code an exported function returns.
func result(err error) C.int {
	if err == nil {
		return codeOK
	}
	return fail(err)
}

// guard turns a panic in an exported function into EGOSF_EINTERNAL: a
// panic must never unwind into C. Use as: defer guard(&rc).
func guard(rc *C.int) {
	if p := recover(); p != nil {
		setError(fmt.Sprintf("libegosf: internal error: %v (please report it): %s", p, firstLine(debug.Stack())))
		*rc = codeInternal
	}
}

func firstLine(stack []byte) string {
	lines := strings.Split(string(stack), "\n")
	return strings.Join(strings.Fields(strings.Join(lines[min(len(lines), 5):min(len(lines), 9)], " ")), " ")
}

// handles holds the open clients; C holds only their IDs.
var handles struct {
	mu      sync.Mutex
	next    uint64
	clients map[uint64]*egosf.Client
}

func client(h *C.egosf_handle) (*egosf.Client, error) {
	if h == nil {
		return nil, errInvalid("handle is NULL")
	}
	handles.mu.Lock()
	defer handles.mu.Unlock()
	c := handles.clients[uint64(h.id)]
	if c == nil {
		return nil, errInvalid("handle is closed or not from egosf_open")
	}
	return c, nil
}

// clientTicket reads the handle and ticket ID arguments most calls take.
func clientTicket(h *C.egosf_handle, id *C.char) (*egosf.Client, string, error) {
	c, err := client(h)
	if err != nil {
		return nil, "", err
	}
	tid, err := goString(id, "ticket ID")
	return c, tid, err
}

// goString reads a required C string argument.
func goString(p *C.char, what string) (string, error) {
	if p == nil {
		return "", errInvalid(what + " is NULL")
	}
	s := C.GoString(p)
	if s == "" {
		return "", errInvalid(what + " is empty")
	}
	return s, nil
}

// optString reads an optional C string argument.
func optString(p *C.char) string {
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

// millis converts a C duration in milliseconds (>= 0).
func millis(ms C.int64_t, what string) (time.Duration, error) {
	if ms < 0 || int64(ms) > math.MaxInt64/int64(time.Millisecond) {
		return 0, errInvalid(fmt.Sprintf("%s %d ms is out of range", what, int64(ms)))
	}
	return time.Duration(ms) * time.Millisecond, nil
}

//export egosf_open
func egosf_open(configPath *C.char, out **C.egosf_handle) (rc C.int) {
	defer guard(&rc)
	if out == nil {
		return fail(errInvalid("out is NULL"))
	}
	*out = nil
	cfg, err := egosf.LoadConfig(config.Options{File: optString(configPath)})
	if err != nil {
		return fail(err)
	}
	c, err := egosf.Open(context.Background(), cfg)
	if err != nil {
		return fail(err)
	}
	handles.mu.Lock()
	if handles.clients == nil {
		handles.clients = map[uint64]*egosf.Client{}
	}
	handles.next++
	id := handles.next
	handles.clients[id] = c
	handles.mu.Unlock()
	h := (*C.egosf_handle)(C.calloc(1, C.sizeof_egosf_handle))
	h.id = C.uint64_t(id)
	*out = h
	return codeOK
}

//export egosf_close
func egosf_close(h *C.egosf_handle) (rc C.int) {
	defer guard(&rc)
	if h == nil {
		return codeOK
	}
	handles.mu.Lock()
	c := handles.clients[uint64(h.id)]
	delete(handles.clients, uint64(h.id))
	handles.mu.Unlock()
	if c == nil {
		return fail(errInvalid("handle is closed or not from egosf_open"))
	}
	C.free(unsafe.Pointer(h))
	return result(c.Close())
}

// cTicket copies t into a new C ticket.
func cTicket(t *egosf.Ticket) *C.egosf_ticket {
	var expires int64
	if !t.Expires.IsZero() {
		expires = t.Expires.UnixMilli()
	}
	ct := C.egosf__ticket_new(C.CString(t.ID), C.CString(t.Backend), C.int(t.Granted), C.int64_t(expires), C.int(len(t.Slots)))
	for i, s := range t.Slots {
		C.egosf__ticket_set_host(ct, C.int(i), C.CString(s.Host), C.CString(s.Address), C.int(s.Count))
	}
	return ct
}

//export egosf_request
func egosf_request(h *C.egosf_handle, minSlots, maxSlots C.int, opts *C.egosf_request_options, out **C.egosf_ticket) (rc C.int) {
	defer guard(&rc)
	if out == nil {
		return fail(errInvalid("out is NULL"))
	}
	*out = nil
	c, err := client(h)
	if err != nil {
		return fail(err)
	}
	req := allocator.Request{Min: int(minSlots), Max: int(maxSlots)}
	ctx := context.Background()
	if opts != nil {
		req.Name, req.Consumer, req.ResReq = optString(opts.name), optString(opts.consumer), optString(opts.resreq)
		req.Exclusive, req.Immediate = opts.exclusive != 0, opts.immediate != 0
		if req.Lease, err = millis(opts.lease_ms, "lease"); err != nil {
			return fail(err)
		}
		timeout, err := millis(opts.timeout_ms, "timeout")
		if err != nil {
			return fail(err)
		}
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
	}
	if err := req.Validate(); err != nil {
		return fail(err)
	}
	t, err := c.RequestTicket(ctx, req)
	if err != nil {
		return fail(err)
	}
	*out = cTicket(t)
	return codeOK
}

// maxRelease caps the number of slots one release may list, so that a
// garbage count from C cannot make the library read far past the array.
const maxRelease = 1 << 16

//export egosf_release
func egosf_release(h *C.egosf_handle, id *C.char, slots *C.egosf_slot, nslots C.size_t, remaining **C.egosf_ticket) (rc C.int) {
	defer guard(&rc)
	if remaining != nil {
		*remaining = nil
	}
	c, tid, err := clientTicket(h, id)
	if err != nil {
		return fail(err)
	}
	if nslots > 0 && slots == nil {
		return fail(errInvalid(fmt.Sprintf("slots is NULL but nslots is %d", uint64(nslots))))
	}
	if nslots > maxRelease {
		return fail(errInvalid(fmt.Sprintf("nslots %d exceeds %d", uint64(nslots), maxRelease)))
	}
	var give []allocator.Slot
	for i := range C.size_t(nslots) {
		s := C.egosf__slot_at(slots, i)
		host, err := goString(s.host, fmt.Sprintf("slots[%d].host", i))
		if err != nil {
			return fail(err)
		}
		if s.count < 0 {
			return fail(errInvalid(fmt.Sprintf("slots[%d].count is %d", i, int(s.count))))
		}
		give = append(give, allocator.Slot{Host: host, Count: int(s.count)})
	}
	left, err := c.Release(context.Background(), tid, give...)
	if err != nil {
		return fail(err)
	}
	if remaining != nil && left != nil {
		*remaining = cTicket(left)
	}
	return codeOK
}

//export egosf_renew
func egosf_renew(h *C.egosf_handle, id *C.char, leaseMS C.int64_t, out **C.egosf_ticket) (rc C.int) {
	defer guard(&rc)
	if out != nil {
		*out = nil
	}
	c, tid, err := clientTicket(h, id)
	if err != nil {
		return fail(err)
	}
	lease, err := millis(leaseMS, "lease")
	if err != nil {
		return fail(err)
	}
	if err := allocator.ValidateLease(lease); err != nil {
		return fail(err)
	}
	t, err := c.Renew(context.Background(), tid, lease)
	if err != nil {
		return fail(err)
	}
	if out != nil {
		*out = cTicket(t)
	}
	return codeOK
}

//export egosf_get
func egosf_get(h *C.egosf_handle, id *C.char, out **C.egosf_ticket) (rc C.int) {
	defer guard(&rc)
	if out == nil {
		return fail(errInvalid("out is NULL"))
	}
	*out = nil
	c, tid, err := clientTicket(h, id)
	if err != nil {
		return fail(err)
	}
	t, err := c.Get(context.Background(), tid)
	if err != nil {
		return fail(err)
	}
	*out = cTicket(t)
	return codeOK
}

//export egosf_list
func egosf_list(h *C.egosf_handle, out **C.egosf_ticket_list) (rc C.int) {
	defer guard(&rc)
	if out == nil {
		return fail(errInvalid("out is NULL"))
	}
	*out = nil
	c, err := client(h)
	if err != nil {
		return fail(err)
	}
	ts, err := c.List(context.Background())
	if err != nil {
		return fail(err)
	}
	l := C.egosf__ticket_list_new(C.int(len(ts)))
	for i := range ts {
		C.egosf__ticket_list_set(l, C.int(i), cTicket(&ts[i]))
	}
	*out = l
	return codeOK
}
