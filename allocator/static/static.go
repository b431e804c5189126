// Package static is the embedded default allocator: a fixed pool of hosts and
// slot counts from configuration, with leases, kept in a bbolt database that
// several processes on one machine share without oversubscribing it.
package static

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/snowflock/snowflock/allocator"
)

// Name is the backend's name in configuration.
const Name = "static"

// Description says what the backend is, for listings.
const Description = "fixed pool of hosts from configuration (embedded default)"

// pollMin is the first wait between two looks at the pool by a waiting
// request; the wait doubles up to the configured poll interval.
const pollMin = 20 * time.Millisecond

// DefaultPollInterval is how often waiting requests and the event stream look
// at the pool at most.
const DefaultPollInterval = 250 * time.Millisecond

// Allocator is the static pool. It holds no open database between calls: each
// call takes the pool's lock file, which serialises every process sharing the
// pool, and opens the database under it.
type Allocator struct {
	cfg  Config
	path string
	poll time.Duration
	def  []byte // the pool's hosts as stored under meta "pool"
}

var (
	_ allocator.Allocator    = (*Allocator)(nil)
	_ allocator.HostReporter = (*Allocator)(nil)
)

// Option tunes an Allocator.
type Option func(*Allocator)

// WithPollInterval sets how often waiting requests and Events look at the
// pool at most (default DefaultPollInterval).
func WithPollInterval(d time.Duration) Option {
	return func(a *Allocator) {
		if d > 0 {
			a.poll = d
		}
	}
}

// New opens (creating if needed) the pool database under cfg.StateDir.
func New(cfg Config, opts ...Option) (*Allocator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("static allocator: %v: %w", err, allocator.ErrInvalidArgument)
	}
	cfg = cfg.withDefaults()
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("static allocator: state_dir is empty: %w", allocator.ErrInvalidArgument)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("static allocator: creating state_dir: %v: %w", err, allocator.ErrBackendDown)
	}
	a := &Allocator{cfg: cfg, path: filepath.Join(cfg.StateDir, "static.db"), poll: DefaultPollInterval}
	for _, o := range opts {
		o(a)
	}
	def, err := json.Marshal(cfg.Hosts)
	if err != nil {
		return nil, fmt.Errorf("static allocator: %w", err)
	}
	a.def = def
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Most opens find the database ready: check that under the shared lock,
	// so that reading commands never need the exclusive one.
	ready := false
	if _, err := os.Stat(a.path); err == nil {
		if err := a.view(ctx, func(tx *bbolt.Tx) error { ready = a.isReady(tx); return nil }); err != nil {
			return nil, fmt.Errorf("static allocator: %w", err)
		}
	}
	if !ready {
		if err := a.update(ctx, a.initDB); err != nil {
			return nil, fmt.Errorf("static allocator: %w", err)
		}
	}
	return a, nil
}

// isReady says whether the database has this format, every bucket, and this
// process's pool definition.
func (a *Allocator) isReady(tx *bbolt.Tx) bool {
	meta := tx.Bucket(bucketMeta)
	if meta == nil || string(meta.Get(keyFormat)) != strconv.Itoa(formatMajor) || !bytes.Equal(meta.Get(keyPool), a.def) {
		return false
	}
	for _, b := range [][]byte{bucketAllocations, bucketWaiters, bucketEvents} {
		if tx.Bucket(b) == nil {
			return false
		}
	}
	return true
}

// Info names the backend.
func (a *Allocator) Info() allocator.Info {
	return allocator.Info{Name: Name, Description: Description}
}

// Config returns the configuration in force, defaults filled in.
func (a *Allocator) Config() Config { return a.cfg }

// Close does nothing: no database is held open between calls.
func (a *Allocator) Close() error { return nil }

// initDB creates the buckets, checks the format, and records the pool's
// hosts, or checks them against those recorded.
func (a *Allocator) initDB(tx *bbolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	if v := meta.Get(keyFormat); v != nil {
		major, _, _ := strings.Cut(string(v), ".")
		if major != strconv.Itoa(formatMajor) {
			return fmt.Errorf("pool database has format %s, this program reads format %d: %w", v, formatMajor, allocator.ErrBackendDown)
		}
	} else if err := meta.Put(keyFormat, []byte(strconv.Itoa(formatMajor))); err != nil {
		return err
	}
	for _, b := range [][]byte{bucketAllocations, bucketWaiters, bucketEvents} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	old := meta.Get(keyPool)
	switch {
	case old == nil:
		return meta.Put(keyPool, a.def)
	case bytes.Equal(old, a.def):
		return nil
	}
	// The configuration changed. Adopt it only while nothing is held, so
	// that two configurations never share one database's slots. While
	// slots are held this process may still list, renew and release; its
	// requests fail (checkPool) until the configurations agree.
	now := time.Now()
	if err := a.sweep(tx, now); err != nil {
		return err
	}
	p, err := a.occupancy(tx, now)
	if err != nil {
		return err
	}
	for _, n := range p.held {
		if n > 0 {
			return nil
		}
	}
	return meta.Put(keyPool, a.def)
}

// checkPool fails when the pool recorded in the database is not the one this
// process is configured with (two configurations share state_dir).
func (a *Allocator) checkPool(tx *bbolt.Tx) error {
	if cur := tx.Bucket(bucketMeta).Get(keyPool); !bytes.Equal(cur, a.def) {
		return fmt.Errorf("the pool in %s has hosts %s but this configuration has %s; it adopts a new configuration only while no slots are held (release them, or use one configuration for every process sharing state_dir): %w",
			a.path, describePool(cur), describePool(a.def), allocator.ErrInvalidArgument)
	}
	return nil
}

// storedHosts returns the pool's hosts as recorded in the database.
func storedHosts(tx *bbolt.Tx) ([]Host, error) {
	var hosts []Host
	if err := json.Unmarshal(tx.Bucket(bucketMeta).Get(keyPool), &hosts); err != nil {
		return nil, fmt.Errorf("pool definition in the database is corrupt: %v: %w", err, allocator.ErrBackendDown)
	}
	return hosts, nil
}

// describePool renders a stored host list as "h1:4,h2:4".
func describePool(def []byte) string {
	var hosts []Host
	if json.Unmarshal(def, &hosts) != nil {
		return "(unreadable)"
	}
	parts := make([]string, len(hosts))
	for i, h := range hosts {
		parts[i] = fmt.Sprintf("%s:%d", h.Name, h.Slots)
	}
	return strings.Join(parts, ",")
}

// open locks the pool (waiting for other processes until ctx ends) and opens
// its database. close undoes both.
func (a *Allocator) open(ctx context.Context, readOnly bool) (db *bbolt.DB, close func(), err error) {
	if ctx.Err() != nil {
		return nil, nil, fmt.Errorf("pool %s: %w", a.path, ctxErr(ctx))
	}
	unlock, err := lockPool(ctx, a.path+".lock", readOnly)
	if err != nil {
		return nil, nil, err
	}
	// A damaged file can fault while bbolt reads its mapping: make such a
	// fault a panic that survive recovers, for this goroutine, until close.
	prevFault := debug.SetPanicOnFault(true)
	db, err = func() (db *bbolt.DB, err error) {
		defer a.survive(&err)
		// Holding the pool lock, bbolt's own file lock is free at once.
		return bbolt.Open(a.path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: readOnly})
	}()
	if err != nil {
		debug.SetPanicOnFault(prevFault)
		unlock()
		if !errors.Is(err, allocator.ErrBackendDown) {
			err = fmt.Errorf("opening pool database %s: %v: %w", a.path, err, allocator.ErrBackendDown)
		}
		return nil, nil, err
	}
	return db, func() { db.Close(); unlock(); debug.SetPanicOnFault(prevFault) }, nil
}

func (a *Allocator) update(ctx context.Context, fn func(*bbolt.Tx) error) (err error) {
	db, closeDB, err := a.open(ctx, false)
	if err != nil {
		return err
	}
	defer closeDB()
	defer a.survive(&err)
	return db.Update(fn)
}

// survive turns a fault while reading the mapped database (a truncated or
// damaged file raises SIGBUS or SIGSEGV) into an error instead of a crash.
// Deferred by update and view.
func (a *Allocator) survive(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("pool database %s is damaged (%v); move it aside to start an empty pool: %w", a.path, r, allocator.ErrBackendDown)
	}
}

func (a *Allocator) view(ctx context.Context, fn func(*bbolt.Tx) error) (err error) {
	db, closeDB, err := a.open(ctx, true)
	if err != nil {
		return err
	}
	defer closeDB()
	defer a.survive(&err)
	return db.View(fn)
}

// ctxErr turns a finished context into the allocator's error classes.
func ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return allocator.ErrTimeout
	}
	return fmt.Errorf("request abandoned: %w", ctx.Err())
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return Name + "-" + hex.EncodeToString(b[:])
}

func seqKey(n uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, n)
}

// sweep ends allocations whose lease ran out, recording an event for each,
// and drops waiters whose process stopped heart-beating.
func (a *Allocator) sweep(tx *bbolt.Tx, now time.Time) error {
	allocs := tx.Bucket(bucketAllocations)
	var expired []record
	err := allocs.ForEach(func(k, v []byte) error {
		r, err := decodeRecord(k, v)
		if err != nil {
			return err
		}
		if r.Allocation.Expired(now) {
			expired = append(expired, r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range expired {
		if err := allocs.Delete([]byte(r.Allocation.ID)); err != nil {
			return err
		}
		ev := allocator.Event{
			Kind: allocator.EventExpired, AllocationID: r.Allocation.ID, Slots: r.Allocation.Slots,
			Reason: "lease expired at " + r.Allocation.Expires.Format(time.RFC3339), Time: now,
		}
		if err := putEvent(tx, ev); err != nil {
			return err
		}
	}
	waiters := tx.Bucket(bucketWaiters)
	var stale [][]byte
	err = waiters.ForEach(func(k, v []byte) error {
		var w waiter
		if json.Unmarshal(v, &w) != nil || now.Sub(w.Heartbeat) > a.waiterStale() {
			stale = append(stale, k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range stale {
		if err := waiters.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// waiterStale is how old a waiter's heartbeat may be before it is dropped.
func (a *Allocator) waiterStale() time.Duration { return 10*a.poll + time.Second }

func putEvent(tx *bbolt.Tx, ev allocator.Event) error {
	b := tx.Bucket(bucketEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := b.Put(seqKey(seq), data); err != nil {
		return err
	}
	// Keep the newest maxEvents.
	if seq > maxEvents {
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= seq-maxEvents; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
	}
	return nil
}

// pool is the pool's occupancy at one moment.
type pool struct {
	held      map[string]int  // slots held per host
	exclusive map[string]bool // hosts held by an exclusive allocation
}

func (a *Allocator) occupancy(tx *bbolt.Tx, now time.Time) (pool, error) {
	p := pool{held: map[string]int{}, exclusive: map[string]bool{}}
	err := tx.Bucket(bucketAllocations).ForEach(func(k, v []byte) error {
		r, err := decodeRecord(k, v)
		if err != nil {
			return err
		}
		if r.Allocation.Expired(now) {
			return nil
		}
		for _, s := range r.Allocation.Slots {
			p.held[s.Host] += s.Count
			if r.Allocation.Exclusive {
				p.exclusive[s.Host] = true
			}
		}
		return nil
	})
	return p, err
}

// candidate is a host that may take part in a grant.
type candidate struct {
	host Host
	free int
}

// candidates returns the hosts eligible for req in configuration order, with
// their free slots now, and the eligible hosts' total capacity.
func (a *Allocator) candidates(p pool, req allocator.Request, tags []string) (cands []candidate, capacity int) {
	for _, h := range a.cfg.Hosts {
		if !hasTags(h, tags) {
			continue
		}
		capacity += h.Slots
		free := h.Slots - p.held[h.Name]
		if p.exclusive[h.Name] || (req.Exclusive && p.held[h.Name] > 0) {
			free = 0
		}
		cands = append(cands, candidate{host: h, free: max(free, 0)})
	}
	return cands, capacity
}

func hasTags(h Host, tags []string) bool {
	for _, t := range tags {
		if !slices.Contains(h.Tags, t) {
			return false
		}
	}
	return true
}

func parseTags(resreq string) []string {
	var tags []string
	for t := range strings.SplitSeq(resreq, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return tags
}

// place chooses up to n slots from cands.
func place(cands []candidate, n int, how Placement) []allocator.Slot {
	take := make([]int, len(cands))
	switch how {
	case Pack:
		for i, c := range cands {
			t := min(c.free, n)
			take[i], n = t, n-t
		}
	default: // Spread: as if dealing one slot per host per round.
		// Find the last round L that is needed: the smallest L with
		// sum(min(free, L)) >= n. Every host gets min(free, L-1); round L
		// gives one more to hosts with free >= L, in order, until n.
		total, most := 0, 0
		for _, c := range cands {
			total, most = total+c.free, max(most, c.free)
		}
		n = min(n, total)
		dealt := func(rounds int) int {
			sum := 0
			for _, c := range cands {
				sum += min(c.free, rounds)
			}
			return sum
		}
		lo, hi := 0, most // dealt(lo) < n <= dealt(hi), when n > 0
		for hi-lo > 1 {
			if mid := lo + (hi-lo)/2; dealt(mid) >= n {
				hi = mid
			} else {
				lo = mid
			}
		}
		if n > 0 {
			for i, c := range cands {
				take[i] = min(c.free, hi-1)
				n -= take[i]
			}
			for i, c := range cands {
				if n > 0 && c.free >= hi {
					take[i]++
					n--
				}
			}
		}
	}
	var slots []allocator.Slot
	for i, c := range cands {
		if take[i] > 0 {
			slots = append(slots, allocator.Slot{Host: c.host.Name, Address: c.host.Address, Count: take[i]})
		}
	}
	return slots
}

// Request grants between req.Min and req.Max slots, first come first served
// among waiting requests.
func (a *Allocator) Request(ctx context.Context, req allocator.Request) (*allocator.Allocation, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	tags := parseTags(req.ResReq)
	lease := req.Lease
	if lease == 0 {
		lease = a.cfg.Lease
	}
	var (
		mySeq uint64 // our place in the waiters queue, 0 before we wait
		delay = pollMin
	)
	defer func() {
		if mySeq == 0 {
			return
		}
		// Leave the queue even when ctx has ended.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = a.update(cctx, func(tx *bbolt.Tx) error { return tx.Bucket(bucketWaiters).Delete(seqKey(mySeq)) })
	}()
	for {
		var (
			granted *allocator.Allocation
			status  string
		)
		err := a.update(ctx, func(tx *bbolt.Tx) error {
			now := time.Now()
			if err := a.checkPool(tx); err != nil {
				return err
			}
			if err := a.sweep(tx, now); err != nil {
				return err
			}
			p, err := a.occupancy(tx, now)
			if err != nil {
				return err
			}
			cands, capacity := a.candidates(p, req, tags)
			if capacity < req.Min {
				what := "the pool has"
				if len(tags) > 0 {
					what = fmt.Sprintf("hosts with tags %s have", strings.Join(tags, ","))
				}
				return fmt.Errorf("at least %d slots asked for but %s %d in all: %w", req.Min, what, capacity, allocator.ErrNoneAvailable)
			}
			free := 0
			for _, c := range cands {
				free += c.free
			}
			ahead := a.waitersAhead(tx, mySeq, tags)
			if free >= req.Min && ahead == 0 {
				granted = &allocator.Allocation{
					ID: newID(), Backend: Name, Name: req.Name, Consumer: req.Consumer, Exclusive: req.Exclusive,
					Slots: place(cands, req.Max, a.cfg.Placement), Created: now.UTC(), Expires: now.Add(lease).UTC(),
				}
				granted.Granted = allocator.Total(granted.Slots)
				data, err := json.Marshal(record{Allocation: *granted, ResReq: req.ResReq})
				if err != nil {
					return err
				}
				if mySeq != 0 {
					if err := tx.Bucket(bucketWaiters).Delete(seqKey(mySeq)); err != nil {
						return err
					}
					mySeq = 0
				}
				return tx.Bucket(bucketAllocations).Put([]byte(granted.ID), data)
			}
			status = fmt.Sprintf("%d of %d slots free, at least %d wanted", free, capacity, req.Min)
			if ahead > 0 {
				status += fmt.Sprintf(", %d earlier request(s) waiting", ahead)
			}
			if req.Immediate {
				return nil
			}
			return a.heartbeat(tx, &mySeq, waiter{Min: req.Min, Tags: tags, Heartbeat: now})
		})
		if err != nil {
			return nil, fmt.Errorf("static allocator: %w", err)
		}
		if granted != nil {
			return granted, nil
		}
		if req.Immediate {
			return nil, fmt.Errorf("static allocator: %s: %w", status, allocator.ErrNoneAvailable)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("static allocator: %s: %w", status, ctxErr(ctx))
		case <-time.After(delay):
		}
		delay = min(2*delay, a.poll)
	}
}

// waitersAhead counts the waiting requests queued before seq (all of them
// when seq is 0: a new request queues last) that could use some host a
// request for tags could use.
func (a *Allocator) waitersAhead(tx *bbolt.Tx, seq uint64, tags []string) int {
	n := 0
	c := tx.Bucket(bucketWaiters).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if seq != 0 && binary.BigEndian.Uint64(k) >= seq {
			break
		}
		var w waiter
		if json.Unmarshal(v, &w) != nil || a.overlap(tags, w.Tags) {
			n++
		}
	}
	return n
}

// overlap says whether some host has both sets of tags.
func (a *Allocator) overlap(t1, t2 []string) bool {
	for _, h := range a.cfg.Hosts {
		if hasTags(h, t1) && hasTags(h, t2) {
			return true
		}
	}
	return false
}

// heartbeat queues a waiting request (setting *seq) or refreshes its place.
func (a *Allocator) heartbeat(tx *bbolt.Tx, seq *uint64, w waiter) error {
	b := tx.Bucket(bucketWaiters)
	if *seq == 0 {
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		*seq = n
	}
	data, err := json.Marshal(w)
	if err != nil {
		return err
	}
	return b.Put(seqKey(*seq), data)
}

// Waiting counts the requests waiting for slots.
func (a *Allocator) Waiting(ctx context.Context) (int, error) {
	n := 0
	err := a.view(ctx, func(tx *bbolt.Tx) error {
		now := time.Now()
		return tx.Bucket(bucketWaiters).ForEach(func(_, v []byte) error {
			var w waiter
			if json.Unmarshal(v, &w) == nil && now.Sub(w.Heartbeat) <= a.waiterStale() {
				n++
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("static allocator: waiting: %w", err)
	}
	return n, nil
}

// Release gives back some or all slots of allocation id.
func (a *Allocator) Release(ctx context.Context, id string, slots []allocator.Slot) (*allocator.Allocation, error) {
	var remaining *allocator.Allocation
	err := a.update(ctx, func(tx *bbolt.Tx) error {
		if err := a.sweep(tx, time.Now()); err != nil {
			return err
		}
		r, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		b := tx.Bucket(bucketAllocations)
		if len(slots) == 0 {
			return b.Delete([]byte(id))
		}
		left, err := subtract(r.Allocation.Slots, slots, id)
		if err != nil {
			return err
		}
		if len(left) == 0 {
			return b.Delete([]byte(id))
		}
		r.Allocation.Slots = left
		r.Allocation.Granted = allocator.Total(left)
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		remaining = &r.Allocation
		return b.Put([]byte(id), data)
	})
	if err != nil {
		return nil, fmt.Errorf("static allocator: release %s: %w", id, err)
	}
	return remaining, nil
}

// subtract takes rel from held, failing without change when rel names a host
// not held or more slots than held there.
func subtract(held, rel []allocator.Slot, id string) ([]allocator.Slot, error) {
	want := map[string]int{}
	all := map[string]bool{}
	for _, s := range rel {
		switch {
		case s.Count < 0:
			return nil, fmt.Errorf("release of %d slots on %s: %w", s.Count, s.Host, allocator.ErrInvalidArgument)
		case s.Count == 0:
			all[s.Host] = true
		default:
			want[s.Host] += s.Count
		}
	}
	have := map[string]int{}
	for _, s := range held {
		have[s.Host] += s.Count
	}
	for h := range all {
		if have[h] == 0 {
			return nil, fmt.Errorf("allocation %s holds no slots on host %q: %w", id, h, allocator.ErrInvalidArgument)
		}
		want[h] = have[h]
	}
	for h, n := range want {
		if n > have[h] {
			return nil, fmt.Errorf("allocation %s holds %d slots on host %q, cannot release %d: %w", id, have[h], h, n, allocator.ErrInvalidArgument)
		}
	}
	var left []allocator.Slot
	for _, s := range held {
		if s.Count -= want[s.Host]; s.Count > 0 {
			left = append(left, s)
		}
	}
	return left, nil
}

func getRecord(tx *bbolt.Tx, id string) (record, error) {
	v := tx.Bucket(bucketAllocations).Get([]byte(id))
	if v == nil {
		return record{}, allocator.ErrUnknownAllocation
	}
	r, err := decodeRecord([]byte(id), v)
	if err != nil {
		return r, err
	}
	if r.Allocation.Expired(time.Now()) {
		return r, fmt.Errorf("lease expired: %w", allocator.ErrUnknownAllocation)
	}
	return r, nil
}

// Renew extends the lease of allocation id to lease from now.
func (a *Allocator) Renew(ctx context.Context, id string, lease time.Duration) (*allocator.Allocation, error) {
	if err := allocator.ValidateLease(lease); err != nil {
		return nil, fmt.Errorf("static allocator: renew %s: %w", id, err)
	}
	if lease == 0 {
		lease = a.cfg.Lease
	}
	var out allocator.Allocation
	err := a.update(ctx, func(tx *bbolt.Tx) error {
		now := time.Now()
		if err := a.sweep(tx, now); err != nil {
			return err
		}
		r, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		r.Allocation.Expires = now.Add(lease).UTC()
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		out = r.Allocation
		return tx.Bucket(bucketAllocations).Put([]byte(id), data)
	})
	if err != nil {
		return nil, fmt.Errorf("static allocator: renew %s: %w", id, err)
	}
	return &out, nil
}

// Get returns allocation id.
func (a *Allocator) Get(ctx context.Context, id string) (*allocator.Allocation, error) {
	var out allocator.Allocation
	err := a.view(ctx, func(tx *bbolt.Tx) error {
		r, err := getRecord(tx, id)
		out = r.Allocation
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("static allocator: %s: %w", id, err)
	}
	return &out, nil
}

// List returns the live allocations, oldest first.
func (a *Allocator) List(ctx context.Context) ([]allocator.Allocation, error) {
	out := []allocator.Allocation{}
	err := a.view(ctx, func(tx *bbolt.Tx) error {
		now := time.Now()
		return tx.Bucket(bucketAllocations).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(k, v)
			if err != nil {
				return err
			}
			if !r.Allocation.Expired(now) {
				out = append(out, r.Allocation)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("static allocator: list: %w", err)
	}
	slices.SortStableFunc(out, func(x, y allocator.Allocation) int { return x.Created.Compare(y.Created) })
	return out, nil
}

// Hosts reports every host of the pool (as recorded in the database) with its
// slots and how many are held.
func (a *Allocator) Hosts(ctx context.Context) ([]allocator.HostUsage, error) {
	var out []allocator.HostUsage
	err := a.view(ctx, func(tx *bbolt.Tx) error {
		p, err := a.occupancy(tx, time.Now())
		if err != nil {
			return err
		}
		hosts, err := storedHosts(tx)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			out = append(out, allocator.HostUsage{Host: h.Name, Address: h.Address, Slots: h.Slots, Held: p.held[h.Name], Exclusive: p.exclusive[h.Name]})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("static allocator: hosts: %w", err)
	}
	return out, nil
}

// Events streams allocations ended by lease expiry from now on. Expiry is
// noticed within the poll interval.
func (a *Allocator) Events(ctx context.Context) (<-chan allocator.Event, error) {
	var last uint64
	err := a.view(ctx, func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket(bucketEvents).Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("static allocator: events: %w", err)
	}
	ch := make(chan allocator.Event)
	go func() {
		defer close(ch)
		t := time.NewTicker(a.poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var evs []allocator.Event
			_ = a.update(ctx, func(tx *bbolt.Tx) error {
				if err := a.sweep(tx, time.Now()); err != nil {
					return err
				}
				c := tx.Bucket(bucketEvents).Cursor()
				for k, v := c.Seek(seqKey(last + 1)); k != nil; k, v = c.Next() {
					last = binary.BigEndian.Uint64(k)
					var ev allocator.Event
					if json.Unmarshal(v, &ev) == nil {
						evs = append(evs, ev)
					}
				}
				return nil
			})
			for _, ev := range evs {
				select {
				case ch <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return ch, nil
}
