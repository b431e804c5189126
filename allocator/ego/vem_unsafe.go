//go:build egocapi

// The EGO C API transport, for sites with the EGO SDK: build
// sfalloc-plugin-ego with -tags egocapi where vem.h and libvem are
// installed (CGO_CFLAGS=-I$EGO_TOP/include, CGO_LDFLAGS=-L$EGO_TOP/lib).
// This file and vem_shim.c are the only cgo outside bindings/c
// (architecture_test.go checks that they stay behind the build tag); the
// file is named *_unsafe.go because cgo needs unsafe.Pointer for C.free.
//
// UNVERIFIED: the EGO SDK is proprietary and was not available where this
// was written. The calls follow the documented vem_* names and semantics
// (Platform EGO C API reference: vem_open, vem_logon, vem_register with a
// time-to-live, vem_alloc with EGO_ALLOC_EXCLUSIVE, vem_release with
// AUTOADJ, vem_getmessage for RESOURCE_ADD / RESOURCE_RECLAIM); the C
// shims in vem_shim.c are where the SDK's exact prototypes are matched,
// and must be checked against vem.h before use.

package ego

/*
#cgo LDFLAGS: -lvem
#include <stdlib.h>

// The shims, in vem_shim.c: one per operation, each calling libvem and,
// for queries, rendering the answer as the JSON of allocator/ego/wire.
// They return 0 on success, 404 when the named object does not exist, and
// another non-zero value on other failures (sf_error says why).
void *sf_open(const char *master);
int sf_logon(void *h, const char *user, const char *password);
int sf_logon_token(void *h, const char *token);
const char *sf_error(void *h);
int sf_consumer(void *h, const char *path, char *json, int len);
int sf_resourcegroup(void *h, const char *name, char *json, int len);
int sf_register(void *h, const char *client, int ttl, char *json, int len);
int sf_alloc(void *h, const char *consumer, const char *rg, const char *resreq, int minslots, int maxslots, int exclusive, const char *name, char *json, int len);
int sf_query(void *h, const char *id, char *json, int len);
int sf_list(void *h, const char *client, char *json, int len);
int sf_release(void *h, const char *id, const char *host, int slots);
int sf_free(void *h, const char *id);
int sf_message(void *h, int timeout_s, char *json, int len);
*/
import "C"

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/ego/wire"
)

// capi talks to EGO through libvem. Replies that the shims render as JSON
// are parsed with the same checks as the REST replies (wire.Decode).
type capi struct {
	mu sync.Mutex // one call at a time on the libvem handle
	h  unsafe.Pointer
}

var _ transport = (*capi)(nil)

// bufSize bounds one JSON reply from libvem.
const bufSize = wire.MaxReply

func newCAPI(master, user, password, token string) (transport, error) {
	cm := C.CString(master)
	defer C.free(unsafe.Pointer(cm))
	h := C.sf_open(cm)
	if h == nil {
		return nil, fmt.Errorf("vem_open %q failed: %w", master, allocator.ErrBackendDown)
	}
	c := &capi{h: h}
	cu, cp, ct := C.CString(user), C.CString(password), C.CString(token)
	defer C.free(unsafe.Pointer(cu))
	defer C.free(unsafe.Pointer(cp))
	defer C.free(unsafe.Pointer(ct))
	var rc C.int
	if token != "" {
		rc = C.sf_logon_token(h, ct)
	} else {
		rc = C.sf_logon(h, cu, cp)
	}
	if rc != 0 {
		return nil, fmt.Errorf("EGO refused the credentials (vem_logon: %s): %w", C.GoString(C.sf_error(h)), allocator.ErrInvalidArgument)
	}
	return c, nil
}

// fail turns a libvem failure into an error of class.
func (c *capi) fail(what string, class error) error {
	return fmt.Errorf("EGO %s: %s: %w", what, C.GoString(C.sf_error(c.h)), class)
}

// jsonCall runs a shim that writes JSON into a buffer and decodes it.
func jsonCall[T any](c *capi, what string, notFound error, check func(*T) error, fn func(buf *C.char, n C.int) C.int) (*T, error) {
	buf := (*C.char)(C.malloc(C.size_t(bufSize)))
	defer C.free(unsafe.Pointer(buf))
	if rc := fn(buf, bufSize); rc != 0 {
		if notFound != nil && rc == 404 {
			return nil, c.fail(what, notFound)
		}
		return nil, c.fail(what, allocator.ErrBackendDown)
	}
	return wire.Decode(bytes.NewReader([]byte(C.GoString(buf))), check)
}

func (c *capi) logon(context.Context) error { return nil } // done by newCAPI

func (c *capi) consumer(_ context.Context, path string) (*wire.Consumer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := C.CString(path)
	defer C.free(unsafe.Pointer(cs))
	return jsonCall[wire.Consumer](c, "consumer "+path, allocator.ErrInvalidArgument, nil, func(b *C.char, n C.int) C.int { return C.sf_consumer(c.h, cs, b, n) })
}

func (c *capi) resourceGroup(_ context.Context, name string) (*wire.ResourceGroup, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return jsonCall(c, "resource group "+name, allocator.ErrInvalidArgument, wire.CheckResourceGroup, func(b *C.char, n C.int) C.int { return C.sf_resourcegroup(c.h, cs, b, n) })
}

func (c *capi) register(_ context.Context, r wire.RegisterRequest) (*wire.RegisterReply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := C.CString(r.ClientName)
	defer C.free(unsafe.Pointer(cs))
	return jsonCall(c, "vem_register", nil, wire.CheckRegister, func(b *C.char, n C.int) C.int { return C.sf_register(c.h, cs, C.int(r.TTL), b, n) })
}

func (c *capi) create(_ context.Context, _ string, r wire.AllocationRequest) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	strs := []*C.char{C.CString(r.Consumer), C.CString(r.ResourceGroup), C.CString(r.ResReq), C.CString(r.Name)}
	defer func() {
		for _, p := range strs {
			C.free(unsafe.Pointer(p))
		}
	}()
	excl := C.int(0)
	if r.Exclusive {
		excl = 1
	}
	v, err := jsonCall(c, "vem_alloc", allocator.ErrInvalidArgument, wire.CheckCreated, func(b *C.char, n C.int) C.int {
		return C.sf_alloc(c.h, strs[0], strs[1], strs[2], C.int(r.MinSlots), C.int(r.MaxSlots), excl, strs[3], b, n)
	})
	if err != nil {
		return "", err
	}
	return v.ID, nil
}

func (c *capi) get(_ context.Context, id string) (*wire.Allocation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := C.CString(id)
	defer C.free(unsafe.Pointer(cs))
	return jsonCall(c, "allocation "+id, allocator.ErrUnknownAllocation, wire.CheckAllocation, func(b *C.char, n C.int) C.int { return C.sf_query(c.h, cs, b, n) })
}

func (c *capi) list(_ context.Context, client string) ([]wire.Allocation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := C.CString(client)
	defer C.free(unsafe.Pointer(cs))
	l, err := jsonCall(c, "allocations of "+client, nil, wire.CheckAllocationList, func(b *C.char, n C.int) C.int { return C.sf_list(c.h, cs, b, n) })
	if err != nil {
		return nil, err
	}
	return l.Allocations, nil
}

func (c *capi) release(ctx context.Context, id string, rs []wire.Resource) (*wire.Allocation, error) {
	c.mu.Lock()
	cs := C.CString(id)
	defer C.free(unsafe.Pointer(cs))
	for _, r := range rs {
		ch := C.CString(r.Host)
		rc := C.sf_release(c.h, cs, ch, C.int(r.Slots))
		C.free(unsafe.Pointer(ch))
		if rc != 0 {
			c.mu.Unlock()
			return nil, c.fail("vem_release "+id, allocator.ErrInvalidArgument)
		}
	}
	c.mu.Unlock()
	return c.get(ctx, id)
}

func (c *capi) cancel(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := C.CString(id)
	defer C.free(unsafe.Pointer(cs))
	if C.sf_free(c.h, cs) != 0 {
		return c.fail("vem_release "+id, allocator.ErrUnknownAllocation)
	}
	return nil
}

func (c *capi) notifications(_ context.Context, _ string, _ int64, wait time.Duration) (*wire.NotificationList, error) {
	// vem_getmessage holds the handle's lock while it waits: wait at most a
	// second per call.
	c.mu.Lock()
	defer c.mu.Unlock()
	return jsonCall(c, "vem_getmessage", nil, wire.CheckNotifications, func(b *C.char, n C.int) C.int {
		return C.sf_message(c.h, C.int(min(wait, time.Second)/time.Second), b, n)
	})
}
