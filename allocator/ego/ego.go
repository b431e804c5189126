// Package ego is SnowFlock's Platform EGO allocator backend: a client of
// EGO's documented allocation interface. It logs on (user and password, or
// a PlatformToken), registers as an EGO client with a time-to-live (a
// restarted client finds its allocations again), requests allocations
// (consumer, resource group, resource requirement, min/max slots,
// exclusive), follows the slots EGO adds, releases some or all, and obeys
// reclaims: it reports them as events and releases the reclaimed slots
// before EGO's deadline if their holder has not.
//
// Every wire detail is in allocator/ego/wire. The backend ships as the
// plugin sfalloc-plugin-ego (cmd/sfalloc-plugin-ego): SnowFlock's core
// never links it.
//
// Leases: EGO keeps a client's allocations for its time-to-live after it
// last heard from the client; that is the lease of every allocation of the
// client. Each open, Renew and request with a lease registers the client
// again, with that lease as its time-to-live.
package ego

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/ego/wire"
)

// Name is the backend's name in configuration.
const Name = "ego"

// Description says what the backend is, for listings.
const Description = "Platform EGO allocations (REST)"

// tokenPrefix starts the EGO name of every allocation SnowFlock makes; the
// request token follows.
const tokenPrefix = "snowflock."

// pollWait is how long one notification poll waits at EGO.
const pollWait = 10 * time.Second

// Allocator is the EGO backend.
type Allocator struct {
	cfg     Config
	api     transport
	log     zerolog.Logger
	pending pendingDir
	stop    context.CancelFunc
	done    chan struct{}

	mu       sync.Mutex // guards the fields below
	ttl      time.Duration
	expires  time.Time
	lastSeq  int64
	wake     chan struct{} // closed and replaced on every notification
	subs     map[chan allocator.Event]struct{}
	capacity map[string]int // consumer -> slots of the resource group
	timers   map[*time.Timer]struct{}
	closed   bool
}

var _ allocator.Allocator = (*Allocator)(nil)

// Option changes New.
type Option func(*Allocator)

// WithLogger logs the backend's background work (reclaims) to l.
func WithLogger(l zerolog.Logger) Option { return func(a *Allocator) { a.log = l } }

// New logs on to EGO, checks the consumer and resource group, registers
// the client, cancels requests a dead process left unfinished, and starts
// following the client's notifications.
func New(ctx context.Context, cfg Config, opts ...Option) (*Allocator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ego: %v: %w", err, allocator.ErrInvalidArgument)
	}
	cfg = cfg.withDefaults()
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("ego: no state directory: %w", allocator.ErrInvalidArgument)
	}
	password, token, err := cfg.secrets()
	if err != nil {
		return nil, fmt.Errorf("ego: %v: %w", err, allocator.ErrInvalidArgument)
	}
	var api transport
	if cfg.API == "capi" {
		api, err = newCAPI(cfg.URL, cfg.User, password, token)
	} else {
		api, err = newREST(cfg.URL, cfg.User, password, token)
	}
	if err != nil {
		return nil, fmt.Errorf("ego: %w", err)
	}
	return newWith(ctx, cfg, api, opts...)
}

func newWith(ctx context.Context, cfg Config, api transport, opts ...Option) (*Allocator, error) {
	a := &Allocator{
		cfg: cfg, api: api, log: zerolog.Nop(), pending: pendingDir{dir: filepath.Join(cfg.StateDir, "ego-requests")},
		wake: make(chan struct{}), subs: map[chan allocator.Event]struct{}{}, capacity: map[string]int{},
		timers: map[*time.Timer]struct{}{}, done: make(chan struct{}),
	}
	for _, o := range opts {
		o(a)
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := api.logon(cctx); err != nil {
		return nil, fmt.Errorf("ego: logon: %w", err)
	}
	if _, err := a.checkConsumer(cctx, cfg.Consumer); err != nil {
		return nil, err
	}
	reg, err := a.register(cctx, cfg.ClientTTL)
	if err != nil {
		return nil, err
	}
	a.lastSeq = reg.LastSeq
	if err := a.recover(cctx, reg.Allocations); err != nil {
		return nil, err
	}
	pctx, stop := context.WithCancel(context.Background())
	a.stop = stop
	go a.poll(pctx)
	return a, nil
}

// Info names the backend.
func (a *Allocator) Info() allocator.Info {
	return allocator.Info{Name: Name, Description: Description}
}

// Close stops following notifications; allocations stay with EGO for the
// client's time-to-live.
func (a *Allocator) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	for t := range a.timers {
		t.Stop()
	}
	a.mu.Unlock()
	a.stop()
	<-a.done
	return nil
}

// register registers the client with time-to-live ttl.
func (a *Allocator) register(ctx context.Context, ttl time.Duration) (*wire.RegisterReply, error) {
	now := time.Now()
	reg, err := a.api.register(ctx, wire.RegisterRequest{ClientName: a.cfg.ClientName, Description: "SnowFlock clone slots", TTL: int64((ttl + time.Second - 1) / time.Second)})
	if err != nil {
		return nil, fmt.Errorf("ego: registering client %s: %w", a.cfg.ClientName, err)
	}
	a.mu.Lock()
	a.ttl, a.expires = ttl, now.Add(ttl)
	a.mu.Unlock()
	return reg, nil
}

// recover cancels the allocations of requests whose process died before
// handing them over.
func (a *Allocator) recover(ctx context.Context, allocs []wire.Allocation) error {
	dead, err := a.pending.abandoned()
	if err != nil {
		return fmt.Errorf("ego: %v: %w", err, allocator.ErrBackendDown)
	}
	for tok, forget := range dead {
		for _, al := range allocs {
			if al.Name == tokenPrefix+tok {
				if err := a.api.cancel(ctx, al.ID); err != nil && !errors.Is(err, allocator.ErrUnknownAllocation) {
					return fmt.Errorf("ego: cancelling %s, left by a request that never finished: %w", al.ID, err)
				}
				a.log.Info().Str("allocation", al.ID).Msg("cancelled an allocation left by a request that never finished")
			}
		}
		forget()
	}
	return nil
}

// checkConsumer checks that consumer exists and may use the resource group,
// and returns the group's slots.
func (a *Allocator) checkConsumer(ctx context.Context, consumer string) (int, error) {
	a.mu.Lock()
	n, ok := a.capacity[consumer]
	a.mu.Unlock()
	if ok {
		return n, nil
	}
	c, err := a.api.consumer(ctx, consumer)
	if err != nil {
		return 0, fmt.Errorf("ego: consumer %s: %w", consumer, err)
	}
	if !slices.Contains(c.ResourceGroups, a.cfg.ResourceGroup) {
		return 0, fmt.Errorf("ego: consumer %s may not use resource group %s (it may use: %s): %w",
			consumer, a.cfg.ResourceGroup, strings.Join(c.ResourceGroups, ", "), allocator.ErrInvalidArgument)
	}
	g, err := a.api.resourceGroup(ctx, a.cfg.ResourceGroup)
	if err != nil {
		return 0, fmt.Errorf("ego: resource group %s: %w", a.cfg.ResourceGroup, err)
	}
	for _, h := range g.Hosts {
		n += h.Slots
	}
	a.mu.Lock()
	a.capacity[consumer] = n
	a.mu.Unlock()
	return n, nil
}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// toAllocation turns EGO's allocation into SnowFlock's.
func (a *Allocator) toAllocation(w *wire.Allocation) *allocator.Allocation {
	out := &allocator.Allocation{ID: w.ID, Backend: Name, Name: w.Description, Consumer: w.Consumer, Exclusive: w.Exclusive, Created: w.Created}
	for _, r := range w.Resources {
		addr := cmp.Or(r.Address, r.Host)
		out.Slots = append(out.Slots, allocator.Slot{Host: r.Host, Address: addr, Count: r.Slots})
		out.Granted += r.Slots
	}
	a.mu.Lock()
	out.Expires = a.expires
	a.mu.Unlock()
	return out
}

// wakeup returns a channel closed at the next notification.
func (a *Allocator) wakeup() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.wake
}

// Request asks EGO for an allocation and waits until it holds at least
// req.Min slots. EGO may add slots later, up to req.Max.
func (a *Allocator) Request(ctx context.Context, req allocator.Request) (*allocator.Allocation, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("ego: %w", err)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("ego: request: %w", allocator.ErrTimeout)
	}
	consumer := cmp.Or(req.Consumer, a.cfg.Consumer)
	capacity, err := a.checkConsumer(ctx, consumer)
	if err != nil {
		return nil, err
	}
	if req.Min > capacity {
		return nil, fmt.Errorf("ego: resource group %s has %d slots in all, fewer than the %d asked for: %w", a.cfg.ResourceGroup, capacity, req.Min, allocator.ErrNoneAvailable)
	}
	if req.Lease != 0 {
		if _, err := a.register(ctx, req.Lease); err != nil {
			return nil, err
		}
	}
	tok := newToken()
	p, err := a.pending.create(tok)
	if err != nil {
		return nil, fmt.Errorf("ego: recording the request: %v: %w", err, allocator.ErrBackendDown)
	}
	defer p.done()
	id, err := a.api.create(ctx, a.cfg.ClientName, wire.AllocationRequest{
		Name: tokenPrefix + tok, Description: req.Name, Consumer: consumer, ResourceGroup: a.cfg.ResourceGroup,
		ResReq: req.ResReq, MinSlots: req.Min, MaxSlots: req.Max, Exclusive: req.Exclusive,
	})
	if err != nil {
		return nil, fmt.Errorf("ego: requesting %d-%d slots of %s: %w", req.Min, req.Max, consumer, err)
	}
	var immediate <-chan time.Time
	if req.Immediate {
		t := time.NewTimer(a.cfg.ImmediateWait)
		defer t.Stop()
		immediate = t.C
	}
	giveUp := func(class error, why string) (*allocator.Allocation, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.Timeout)
		defer cancel()
		if err := a.api.cancel(cctx, id); err != nil && !errors.Is(err, allocator.ErrUnknownAllocation) {
			return nil, fmt.Errorf("ego: %s, and cancelling allocation %s failed (it is cancelled on the next start): %w", why, id, err)
		}
		return nil, fmt.Errorf("ego: %s: %w", why, class)
	}
	for {
		wake := a.wakeup()
		w, err := a.api.get(ctx, id)
		switch {
		case err != nil && ctx.Err() != nil:
			return giveUp(allocator.ErrTimeout, "deadline passed waiting for EGO's grant")
		case errors.Is(err, allocator.ErrUnknownAllocation):
			return nil, fmt.Errorf("ego: EGO ended allocation %s before granting it: %w", id, allocator.ErrNoneAvailable)
		case err != nil:
			return giveUp(allocator.ErrBackendDown, err.Error())
		}
		if held := a.toAllocation(w); held.Granted >= req.Min {
			return held, nil
		}
		select {
		case <-wake:
		case <-time.After(time.Second):
		case <-immediate:
			return giveUp(allocator.ErrNoneAvailable, fmt.Sprintf("EGO granted fewer than %d slots at once", req.Min))
		case <-ctx.Done():
			return giveUp(allocator.ErrTimeout, "deadline passed waiting for EGO's grant")
		}
	}
}

// mine returns allocation id if it belongs to this client.
func (a *Allocator) mine(ctx context.Context, id string) (*wire.Allocation, error) {
	w, err := a.api.get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("ego: allocation %s: %w", id, err)
	}
	if w.ClientName != a.cfg.ClientName {
		return nil, fmt.Errorf("ego: allocation %s belongs to EGO client %s, not %s: %w", id, w.ClientName, a.cfg.ClientName, allocator.ErrUnknownAllocation)
	}
	return w, nil
}

// Release gives back some or all slots of an allocation.
func (a *Allocator) Release(ctx context.Context, id string, slots []allocator.Slot) (*allocator.Allocation, error) {
	w, err := a.mine(ctx, id)
	if err != nil {
		return nil, err
	}
	rs, all, err := releaseSet(w, slots)
	if err != nil {
		return nil, fmt.Errorf("ego: release of %s: %v: %w", id, err, allocator.ErrInvalidArgument)
	}
	if all {
		if err := a.api.cancel(ctx, id); err != nil {
			return nil, fmt.Errorf("ego: releasing %s: %w", id, err)
		}
		return nil, nil
	}
	left, err := a.api.release(ctx, id, rs)
	if err != nil {
		return nil, fmt.Errorf("ego: releasing %s on %s: %w", id, describe(rs), err)
	}
	if len(left.Resources) == 0 {
		return nil, nil
	}
	return a.toAllocation(left), nil
}

// releaseSet checks the slots to release against what w holds and returns
// them per host; all says that nothing would be left.
func releaseSet(w *wire.Allocation, slots []allocator.Slot) (rs []wire.Resource, all bool, err error) {
	held := map[string]int{}
	for _, r := range w.Resources {
		held[r.Host] = r.Slots
	}
	if len(slots) == 0 {
		return nil, true, nil
	}
	want := map[string]int{}
	var order []string
	for _, s := range slots {
		n, ok := held[s.Host]
		switch {
		case !ok:
			return nil, false, fmt.Errorf("holds nothing on host %q", s.Host)
		case s.Count < 0:
			return nil, false, fmt.Errorf("negative count %d on %s", s.Count, s.Host)
		case s.Count == 0:
			s.Count = n
		}
		if _, seen := want[s.Host]; !seen {
			order = append(order, s.Host)
		}
		want[s.Host] += s.Count
		if want[s.Host] > n {
			return nil, false, fmt.Errorf("%d slots on %s asked back, %d held", want[s.Host], s.Host, n)
		}
	}
	total, left := 0, 0
	for _, h := range order {
		rs = append(rs, wire.Resource{Host: h, Slots: want[h]})
		total += want[h]
	}
	for _, n := range held {
		left += n
	}
	return rs, total == left, nil
}

func describe(rs []wire.Resource) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s:%d", r.Host, r.Slots)
	}
	return strings.Join(parts, ",")
}

// Renew registers the client again with time-to-live lease (the configured
// one when 0): the lease of every allocation of the client.
func (a *Allocator) Renew(ctx context.Context, id string, lease time.Duration) (*allocator.Allocation, error) {
	if err := allocator.ValidateLease(lease); err != nil {
		return nil, fmt.Errorf("ego: %w", err)
	}
	if _, err := a.mine(ctx, id); err != nil {
		return nil, err
	}
	if lease == 0 {
		lease = a.cfg.ClientTTL
	}
	if _, err := a.register(ctx, lease); err != nil {
		return nil, err
	}
	return a.Get(ctx, id)
}

// Get returns one allocation.
func (a *Allocator) Get(ctx context.Context, id string) (*allocator.Allocation, error) {
	w, err := a.mine(ctx, id)
	if err != nil {
		return nil, err
	}
	return a.toAllocation(w), nil
}

// List returns the client's allocations that hold slots, oldest first.
func (a *Allocator) List(ctx context.Context) ([]allocator.Allocation, error) {
	ws, err := a.api.list(ctx, a.cfg.ClientName)
	if err != nil {
		return nil, fmt.Errorf("ego: listing allocations of %s: %w", a.cfg.ClientName, err)
	}
	var out []allocator.Allocation
	for i := range ws {
		if al := a.toAllocation(&ws[i]); al.Granted > 0 {
			out = append(out, *al)
		}
	}
	slices.SortStableFunc(out, func(x, y allocator.Allocation) int { return x.Created.Compare(y.Created) })
	return out, nil
}

// Events streams reclaims and allocations EGO ended, until ctx ends.
func (a *Allocator) Events(ctx context.Context) (<-chan allocator.Event, error) {
	ch := make(chan allocator.Event, 64)
	a.mu.Lock()
	a.subs[ch] = struct{}{}
	a.mu.Unlock()
	go func() {
		<-ctx.Done()
		a.mu.Lock()
		delete(a.subs, ch)
		a.mu.Unlock()
		close(ch)
	}()
	return ch, nil
}

// publish sends ev to every subscriber. Preconditions: a.mu held.
func (a *Allocator) publish(ev allocator.Event) {
	for ch := range a.subs {
		select {
		case ch <- ev:
		default:
			a.log.Warn().Str("allocation", ev.AllocationID).Msg("event subscriber not keeping up; event dropped")
		}
	}
}

// poll follows the client's notifications until ctx ends.
func (a *Allocator) poll(ctx context.Context) {
	defer close(a.done)
	for ctx.Err() == nil {
		a.mu.Lock()
		after := a.lastSeq
		a.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, pollWait+a.cfg.Timeout)
		l, err := a.api.notifications(cctx, a.cfg.ClientName, after, pollWait)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn().Err(err).Msg("following EGO notifications; retrying")
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		a.mu.Lock()
		for _, n := range l.Notifications {
			a.handle(ctx, n)
		}
		a.lastSeq = max(a.lastSeq, l.LastSeq)
		close(a.wake)
		a.wake = make(chan struct{})
		a.mu.Unlock()
	}
}

// handle acts on one notification. Preconditions: a.mu held.
func (a *Allocator) handle(ctx context.Context, n wire.Notification) {
	var slots []allocator.Slot
	for _, r := range n.Resources {
		slots = append(slots, allocator.Slot{Host: r.Host, Address: cmp.Or(r.Address, r.Host), Count: r.Slots})
	}
	switch n.Type {
	case wire.ResourceReclaim:
		a.publish(allocator.Event{Kind: allocator.EventReclaimed, AllocationID: n.AllocationID, Slots: slots,
			Reason: cmp.Or(n.Reason, "EGO reclaims these slots"), Deadline: n.Deadline, Time: time.Now()})
		// Give the holder most of the time to stop its clones; release what
		// is still held before EGO's deadline.
		left := time.Until(n.Deadline)
		at := left - min(a.cfg.ReclaimMargin, left/2)
		var t *time.Timer
		t = time.AfterFunc(max(at, 0), func() {
			a.mu.Lock()
			delete(a.timers, t)
			closed := a.closed
			a.mu.Unlock()
			if !closed {
				a.honour(ctx, n)
			}
		})
		a.timers[t] = struct{}{}
	case wire.AllocationEnded:
		kind := allocator.EventReclaimed
		if strings.Contains(n.Reason, "time-to-live") {
			kind = allocator.EventExpired
		}
		a.publish(allocator.Event{Kind: kind, AllocationID: n.AllocationID, Slots: slots, Reason: cmp.Or(n.Reason, "EGO ended the allocation"), Time: time.Now()})
	}
}

// honour releases the reclaimed slots that are still held.
func (a *Allocator) honour(ctx context.Context, n wire.Notification) {
	cctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	w, err := a.api.get(cctx, n.AllocationID)
	if errors.Is(err, allocator.ErrUnknownAllocation) {
		return
	}
	if err != nil {
		a.log.Error().Err(err).Str("allocation", n.AllocationID).Msg("reclaim: reading the allocation failed")
		return
	}
	held := map[string]int{}
	for _, r := range w.Resources {
		held[r.Host] = r.Slots
	}
	var rs []wire.Resource
	for _, r := range n.Resources {
		if c := min(r.Slots, held[r.Host]); c > 0 {
			rs = append(rs, wire.Resource{Host: r.Host, Slots: c})
		}
	}
	if len(rs) == 0 {
		return
	}
	if _, err := a.api.release(cctx, n.AllocationID, rs); err != nil {
		a.log.Error().Err(err).Str("allocation", n.AllocationID).Msg("reclaim: releasing the reclaimed slots failed")
		return
	}
	a.log.Info().Str("allocation", n.AllocationID).Str("slots", describe(rs)).Msg("reclaim honoured: slots released before EGO's deadline")
}
