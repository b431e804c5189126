// Package allocatortest is the conformance suite every allocator backend
// passes: the behaviour of the allocator.Allocator interface, tested the same
// way on each backend, in-process or behind a plugin.
package allocatortest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

// Harness describes the backend under test.
type Harness struct {
	// New returns an allocator over a fresh, empty pool of exactly Capacity
	// slots, at least one host of which has two or more. The suite closes it.
	New func(t *testing.T) allocator.Allocator
	// Capacity is the number of slots of the pool New makes (at least 3).
	Capacity int
	// Lease is a lease the backend accepts; 0 means its default.
	Lease time.Duration
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if h.Capacity < 3 {
		t.Fatalf("allocatortest: Capacity %d: the suite needs at least 3 slots", h.Capacity)
	}
	tests := []struct {
		name string
		fn   func(*testing.T, Harness, allocator.Allocator)
	}{
		{"GrantWithinBounds", testGrantWithinBounds},
		{"PartialGrant", testPartialGrant},
		{"InvalidRequests", testInvalidRequests},
		{"ImmediateWhenFull", testImmediateWhenFull},
		{"DeadlineWhenFull", testDeadlineWhenFull},
		{"ImpossibleRequestFailsAtOnce", testImpossible},
		{"ReleaseAll", testReleaseAll},
		{"ReleaseSome", testReleaseSome},
		{"UnknownAllocation", testUnknown},
		{"Renew", testRenew},
		{"WaiterGrantedAfterRelease", testWaiter},
		{"ConcurrentRequestsNeverOversubscribe", testConcurrent},
		{"ExpiredContext", testExpiredContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := h.New(t)
			t.Cleanup(func() { _ = a.Close() })
			tc.fn(t, h, a)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func request(t *testing.T, h Harness, a allocator.Allocator, minSlots, maxSlots int) *allocator.Allocation {
	t.Helper()
	got, err := a.Request(ctx(t), allocator.Request{Min: minSlots, Max: maxSlots, Immediate: true, Lease: h.Lease, Name: t.Name()})
	if err != nil {
		t.Fatalf("Request(min %d, max %d): %v", minSlots, maxSlots, err)
	}
	checkAllocation(t, a, got, minSlots, maxSlots)
	return got
}

// checkAllocation checks the invariants of a grant.
func checkAllocation(t *testing.T, a allocator.Allocator, got *allocator.Allocation, minSlots, maxSlots int) {
	t.Helper()
	if got.ID == "" {
		t.Errorf("allocation has no ID")
	}
	if got.Backend != a.Info().Name {
		t.Errorf("allocation backend %q, want %q", got.Backend, a.Info().Name)
	}
	if got.Granted < minSlots || got.Granted > maxSlots {
		t.Errorf("granted %d, want %d..%d", got.Granted, minSlots, maxSlots)
	}
	if sum := allocator.Total(got.Slots); sum != got.Granted {
		t.Errorf("slots sum to %d but granted says %d: %+v", sum, got.Granted, got.Slots)
	}
	seen := map[string]bool{}
	for _, s := range got.Slots {
		if s.Host == "" || s.Address == "" || s.Count <= 0 {
			t.Errorf("malformed slot %+v", s)
		}
		if seen[s.Host] {
			t.Errorf("host %s listed twice in %+v", s.Host, got.Slots)
		}
		seen[s.Host] = true
	}
}

func held(t *testing.T, a allocator.Allocator) int {
	t.Helper()
	list, err := a.List(ctx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	n := 0
	for _, al := range list {
		n += al.Granted
	}
	return n
}

func testGrantWithinBounds(t *testing.T, h Harness, a allocator.Allocator) {
	got := request(t, h, a, h.Capacity, h.Capacity)
	if got.Granted != h.Capacity {
		t.Fatalf("granted %d of an empty pool of %d, want all", got.Granted, h.Capacity)
	}
	g, err := a.Get(ctx(t), got.ID)
	if err != nil {
		t.Fatalf("Get(%s): %v", got.ID, err)
	}
	if g.Granted != got.Granted || len(g.Slots) != len(got.Slots) {
		t.Errorf("Get returned %+v, Request returned %+v", g, got)
	}
	if n := held(t, a); n != h.Capacity {
		t.Errorf("List shows %d slots held, want %d", n, h.Capacity)
	}
}

func testPartialGrant(t *testing.T, h Harness, a allocator.Allocator) {
	request(t, h, a, h.Capacity-1, h.Capacity-1)
	got := request(t, h, a, 1, 3)
	if got.Granted != 1 {
		t.Fatalf("granted %d with 1 slot free, want 1", got.Granted)
	}
}

func testInvalidRequests(t *testing.T, h Harness, a allocator.Allocator) {
	for _, r := range []allocator.Request{
		{Min: 0, Max: 0}, {Min: 1, Max: 0}, {Min: -1, Max: 2}, {Min: 3, Max: 2}, {Min: 1, Max: 1, Lease: -time.Second},
		{Min: 1, Max: 1, Lease: allocator.MinLease / 2},
	} {
		r.Immediate = true
		if _, err := a.Request(ctx(t), r); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Errorf("Request(%+v) = %v, want ErrInvalidArgument", r, err)
		}
	}
	if n := held(t, a); n != 0 {
		t.Errorf("invalid requests left %d slots held", n)
	}
}

func testImmediateWhenFull(t *testing.T, h Harness, a allocator.Allocator) {
	request(t, h, a, h.Capacity, h.Capacity)
	_, err := a.Request(ctx(t), allocator.Request{Min: 1, Max: 1, Immediate: true, Lease: h.Lease})
	if !errors.Is(err, allocator.ErrNoneAvailable) {
		t.Fatalf("immediate request on a full pool = %v, want ErrNoneAvailable", err)
	}
	if n := held(t, a); n != h.Capacity {
		t.Errorf("held %d after a refused request, want %d", n, h.Capacity)
	}
}

func testDeadlineWhenFull(t *testing.T, h Harness, a allocator.Allocator) {
	request(t, h, a, h.Capacity, h.Capacity)
	c, cancel := context.WithTimeout(ctx(t), 300*time.Millisecond)
	defer cancel()
	_, err := a.Request(c, allocator.Request{Min: 1, Max: 1, Lease: h.Lease})
	if !errors.Is(err, allocator.ErrTimeout) {
		t.Fatalf("waiting request past its deadline = %v, want ErrTimeout", err)
	}
	if n := held(t, a); n != h.Capacity {
		t.Errorf("held %d after a timed-out request, want %d", n, h.Capacity)
	}
}

func testImpossible(t *testing.T, h Harness, a allocator.Allocator) {
	c, cancel := context.WithTimeout(ctx(t), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := a.Request(c, allocator.Request{Min: h.Capacity + 1, Max: h.Capacity + 1, Lease: h.Lease})
	if !errors.Is(err, allocator.ErrNoneAvailable) {
		t.Fatalf("request larger than the pool = %v, want ErrNoneAvailable", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("request larger than the pool waited %s before failing", time.Since(start))
	}
}

func testReleaseAll(t *testing.T, h Harness, a allocator.Allocator) {
	got := request(t, h, a, h.Capacity, h.Capacity)
	left, err := a.Release(ctx(t), got.ID, nil)
	if err != nil || left != nil {
		t.Fatalf("Release(all) = %+v, %v; want nil, nil", left, err)
	}
	if _, err := a.Get(ctx(t), got.ID); !errors.Is(err, allocator.ErrUnknownAllocation) {
		t.Errorf("Get after release = %v, want ErrUnknownAllocation", err)
	}
	if n := held(t, a); n != 0 {
		t.Errorf("held %d after release, want 0", n)
	}
	request(t, h, a, h.Capacity, h.Capacity)
}

func testReleaseSome(t *testing.T, h Harness, a allocator.Allocator) {
	got := request(t, h, a, h.Capacity, h.Capacity)
	var big allocator.Slot
	for _, s := range got.Slots {
		if s.Count >= 2 {
			big = s
		}
	}
	if big.Host == "" {
		t.Fatalf("no host got 2 slots in %+v; the harness must give one host at least 2", got.Slots)
	}
	// Over-release and unknown hosts change nothing.
	for _, bad := range [][]allocator.Slot{
		{{Host: big.Host, Count: big.Count + 1}},
		{{Host: big.Host, Count: big.Count}, {Host: big.Host, Count: 1}},
		{{Host: "no-such-host", Count: 1}},
		{{Host: big.Host, Count: -1}},
	} {
		if _, err := a.Release(ctx(t), got.ID, bad); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Errorf("Release(%+v) = %v, want ErrInvalidArgument", bad, err)
		}
	}
	if n := held(t, a); n != h.Capacity {
		t.Fatalf("held %d after refused releases, want %d", n, h.Capacity)
	}
	left, err := a.Release(ctx(t), got.ID, []allocator.Slot{{Host: big.Host, Count: 1}})
	if err != nil {
		t.Fatalf("Release(1 on %s): %v", big.Host, err)
	}
	if left == nil || left.Granted != h.Capacity-1 {
		t.Fatalf("after releasing 1 slot: %+v, want %d slots left", left, h.Capacity-1)
	}
	for _, s := range left.Slots {
		if s.Host == big.Host && s.Count != big.Count-1 {
			t.Errorf("host %s has %d slots left, want %d", s.Host, s.Count, big.Count-1)
		}
	}
	// The freed slot can be granted again, and only it.
	again := request(t, h, a, 1, 2)
	if again.Granted != 1 || again.Slots[0].Host != big.Host {
		t.Errorf("after a partial release got %+v, want 1 slot on %s", again.Slots, big.Host)
	}
	// Count 0 releases a whole host.
	left, err = a.Release(ctx(t), got.ID, []allocator.Slot{{Host: big.Host}})
	if err != nil {
		t.Fatalf("Release(all on %s): %v", big.Host, err)
	}
	if want := h.Capacity - big.Count; (left == nil && want != 0) || (left != nil && left.Granted != want) {
		t.Errorf("after releasing host %s: %+v, want %d slots", big.Host, left, want)
	}
}

func testUnknown(t *testing.T, h Harness, a allocator.Allocator) {
	const id = "no-such-allocation"
	if _, err := a.Get(ctx(t), id); !errors.Is(err, allocator.ErrUnknownAllocation) {
		t.Errorf("Get = %v, want ErrUnknownAllocation", err)
	}
	if _, err := a.Release(ctx(t), id, nil); !errors.Is(err, allocator.ErrUnknownAllocation) {
		t.Errorf("Release = %v, want ErrUnknownAllocation", err)
	}
	if _, err := a.Renew(ctx(t), id, h.Lease); !errors.Is(err, allocator.ErrUnknownAllocation) {
		t.Errorf("Renew = %v, want ErrUnknownAllocation", err)
	}
}

func testRenew(t *testing.T, h Harness, a allocator.Allocator) {
	got := request(t, h, a, 1, 1)
	time.Sleep(20 * time.Millisecond)
	r, err := a.Renew(ctx(t), got.ID, h.Lease)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if !got.Expires.IsZero() && !r.Expires.After(got.Expires) {
		t.Errorf("Renew moved expiry from %s to %s, want later", got.Expires, r.Expires)
	}
	if r.Granted != got.Granted {
		t.Errorf("Renew changed the grant: %+v", r)
	}
}

func testWaiter(t *testing.T, h Harness, a allocator.Allocator) {
	full := request(t, h, a, h.Capacity, h.Capacity)
	type result struct {
		al  *allocator.Allocation
		err error
	}
	done := make(chan result, 1)
	go func() {
		al, err := a.Request(ctx(t), allocator.Request{Min: 2, Max: 2, Lease: h.Lease})
		done <- result{al, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("request on a full pool returned before any release: %+v, %v", r.al, r.err)
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := a.Release(ctx(t), full.ID, nil); err != nil {
		t.Fatalf("Release: %v", err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("waiting request: %v", r.err)
		}
		checkAllocation(t, a, r.al, 2, 2)
	case <-time.After(20 * time.Second):
		t.Fatalf("waiting request not granted 20s after the release")
	}
}

func testConcurrent(t *testing.T, h Harness, a allocator.Allocator) {
	const workers = 8
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	for range workers {
		wg.Go(func() {
			al, err := a.Request(ctx(t), allocator.Request{Min: 1, Max: 2, Immediate: true, Lease: h.Lease})
			if err != nil {
				if !errors.Is(err, allocator.ErrNoneAvailable) {
					t.Errorf("concurrent request: %v", err)
				}
				return
			}
			mu.Lock()
			total += al.Granted
			mu.Unlock()
		})
	}
	wg.Wait()
	if total > h.Capacity {
		t.Fatalf("granted %d slots in all from a pool of %d", total, h.Capacity)
	}
	if n := held(t, a); n != total {
		t.Errorf("List shows %d held, grants add up to %d", n, total)
	}
	if want := min(h.Capacity, 2*workers); total != want {
		t.Errorf("granted %d in all, want %d (every request may take 1-2 of the free slots)", total, want)
	}
}

func testExpiredContext(t *testing.T, h Harness, a allocator.Allocator) {
	c, cancel := context.WithTimeout(ctx(t), time.Nanosecond)
	defer cancel()
	<-c.Done()
	if _, err := a.Request(c, allocator.Request{Min: 1, Max: 1, Lease: h.Lease}); !errors.Is(err, allocator.ErrTimeout) {
		t.Errorf("Request with a passed deadline = %v, want ErrTimeout", err)
	}
	if n := held(t, a); n != 0 {
		t.Errorf("held %d after a request with a passed deadline, want 0", n)
	}
}
