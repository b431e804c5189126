// Package sim is a SIMULATOR of Platform EGO's allocation interface, for
// tests and demonstrations: it is not EGO and shares no code with it. It
// serves the REST shapes of allocator/ego/wire and imitates the behaviour
// IBM documents for EGO clients: logon (user and password, or a
// PlatformToken), client registration with a time-to-live after which a
// silent client's allocations are freed, allocation requests against a
// consumer and resource group with min/max slots and exclusivity, partial
// grants (the first grant reaches minslots; more slots are added later, as
// they free up or hosts join), asynchronous RESOURCE_ADD and
// RESOURCE_RECLAIM notifications, and reclaims with a deadline after which
// the slots are taken whether released or not.
//
// Simplifications: resreq is recorded but not evaluated; consumers have no
// shares or plans (requests are served first come, first served); there are
// no activities or containers.
package sim

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/snowflock/snowflock/allocator/ego/wire"
)

// Config is the simulated cluster.
type Config struct {
	// Users and their passwords.
	Users map[string]string `json:"users"`
	// Tokens are PlatformTokens accepted, each acting as user TokenUser.
	Tokens []string `json:"tokens"`
	// Consumers maps each consumer path to the resource groups it may use.
	Consumers map[string][]string `json:"consumers"`
	// ResourceGroups maps each resource group to its hosts.
	ResourceGroups map[string][]wire.Host `json:"resourcegroups"`
}

// TokenUser is the user a PlatformToken logs on as.
const TokenUser = "egoservice"

// Default is the cluster simulated when none is configured: user Admin
// (password Admin), consumer /SnowFlock on resource group ComputeHosts of
// two hosts with 4 slots each, and PlatformToken "egosim-token".
func Default() Config {
	return Config{
		Users:     map[string]string{"Admin": "Admin"},
		Tokens:    []string{"egosim-token"},
		Consumers: map[string][]string{"/SnowFlock": {"ComputeHosts"}},
		ResourceGroups: map[string][]wire.Host{"ComputeHosts": {
			{Name: "simhost1", Address: "127.0.0.11", Slots: 4},
			{Name: "simhost2", Address: "127.0.0.12", Slots: 4},
		}},
	}
}

// host is one simulated host.
type host struct {
	wire.Host
	group string
	// used counts slots held, per allocation ID.
	used map[string]int
}

func (h *host) free() int {
	n := h.Slots
	for _, c := range h.used {
		n -= c
	}
	return n
}

// alloc is one allocation.
type alloc struct {
	wire.Allocation
	// granted says the first grant (reaching MinSlots) was made.
	granted bool
}

func (a *alloc) held() int {
	n := 0
	for _, r := range a.Resources {
		n += r.Slots
	}
	return n
}

// client is a registered EGO client.
type client struct {
	name, user string
	ttl        time.Duration
	lastSeen   time.Time
	notes      []wire.Notification
	seq        int64
	changed    chan struct{} // closed and replaced on each notification
}

// Reclaim is a reclaim the simulator issued, and how it ended.
type Reclaim struct {
	AllocationID string    `json:"allocationid"`
	Host         string    `json:"hostname"`
	Slots        int       `json:"slots"`
	Deadline     time.Time `json:"deadline"`
	// Released is when the client gave the slots back (zero if it did not).
	Released time.Time `json:"released,omitzero"`
	// Forced says the deadline passed and the simulator took the slots.
	Forced bool `json:"forced"`
}

// Sim is the simulated cluster. It is safe for concurrent use.
type Sim struct {
	mu        sync.Mutex // guards everything below
	cfg       Config
	sessions  map[string]session
	clients   map[string]*client
	allocs    map[string]*alloc
	order     []string // allocation IDs, oldest first
	hosts     map[string]*host
	hostOrder []string
	reclaims  []*Reclaim
	timers    []*time.Timer
	stop      chan struct{}
	stopped   bool
}

type session struct{ user, csrf string }

// New starts a simulator of cfg. Close stops its timers.
func New(cfg Config) (*Sim, error) {
	s := &Sim{cfg: cfg, sessions: map[string]session{}, clients: map[string]*client{}, allocs: map[string]*alloc{}, hosts: map[string]*host{}, stop: make(chan struct{})}
	groups := make([]string, 0, len(cfg.ResourceGroups))
	for g := range cfg.ResourceGroups {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	for _, g := range groups {
		for _, h := range cfg.ResourceGroups[g] {
			if err := s.addHost(g, h); err != nil {
				return nil, err
			}
		}
	}
	for c, rgs := range cfg.Consumers {
		for _, g := range rgs {
			if _, ok := cfg.ResourceGroups[g]; !ok {
				return nil, fmt.Errorf("consumer %s names resource group %s, which has no hosts", c, g)
			}
		}
	}
	go s.janitor()
	return s, nil
}

// Close stops the simulator's timers.
func (s *Sim) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.stopped = true
		close(s.stop)
		for _, t := range s.timers {
			t.Stop()
		}
	}
}

func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// addHost adds a host. Preconditions: s.mu held or s not yet shared.
func (s *Sim) addHost(group string, h wire.Host) error {
	if h.Name == "" || h.Slots <= 0 {
		return fmt.Errorf("host %q with %d slots", h.Name, h.Slots)
	}
	if _, ok := s.hosts[h.Name]; ok {
		return fmt.Errorf("host %s already exists", h.Name)
	}
	s.hosts[h.Name] = &host{Host: h, group: group, used: map[string]int{}}
	s.hostOrder = append(s.hostOrder, h.Name)
	if s.cfg.ResourceGroups == nil {
		s.cfg.ResourceGroups = map[string][]wire.Host{}
	}
	if !slices.ContainsFunc(s.cfg.ResourceGroups[group], func(x wire.Host) bool { return x.Name == h.Name }) {
		s.cfg.ResourceGroups[group] = append(s.cfg.ResourceGroups[group], h)
	}
	return nil
}

// AddHost adds a host to a resource group, as when a host joins the
// cluster; waiting allocations get its slots.
func (s *Sim) AddHost(group string, h wire.Host) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.addHost(group, h); err != nil {
		return err
	}
	s.schedule()
	return nil
}

// notify queues a notification for client name.
// Preconditions: s.mu held.
func (s *Sim) notify(name string, n wire.Notification) {
	c := s.clients[name]
	if c == nil {
		return
	}
	c.seq++
	n.Seq = c.seq
	n.Time = time.Now()
	c.notes = append(c.notes, n)
	if len(c.notes) > 10000 {
		c.notes = c.notes[len(c.notes)-10000:]
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// schedule hands free slots to allocations that want more, oldest first. An
// allocation's first grant must reach its minimum; later ones add what is
// free. Preconditions: s.mu held.
func (s *Sim) schedule() {
	for _, id := range s.order {
		a := s.allocs[id]
		want := a.MaxSlots - a.held()
		if want <= 0 {
			continue
		}
		take := map[string]int{}
		got := 0
		for _, hn := range s.hostOrder {
			h := s.hosts[hn]
			if h.group != a.ResourceGroup || got == want {
				continue
			}
			if s.blocked(h, a) {
				continue
			}
			n := min(h.free(), want-got)
			if n > 0 {
				take[hn] = n
				got += n
			}
		}
		if got == 0 || (!a.granted && got+a.held() < a.MinSlots) {
			continue
		}
		var added []wire.Resource
		for _, hn := range s.hostOrder {
			n := take[hn]
			if n == 0 {
				continue
			}
			h := s.hosts[hn]
			h.used[a.ID] += n
			added = append(added, wire.Resource{Host: hn, Address: h.Address, Slots: n})
			i := slices.IndexFunc(a.Resources, func(r wire.Resource) bool { return r.Host == hn })
			if i < 0 {
				a.Resources = append(a.Resources, wire.Resource{Host: hn, Address: h.Address, Slots: n})
			} else {
				a.Resources[i].Slots += n
			}
		}
		a.granted = true
		a.State = wire.StateAllocated
		s.notify(a.ClientName, wire.Notification{Type: wire.ResourceAdd, AllocationID: a.ID, Resources: added})
	}
}

// blocked says whether allocation a may not use host h because of
// exclusivity (EGO_ALLOC_EXCLUSIVE). Preconditions: s.mu held.
func (s *Sim) blocked(h *host, a *alloc) bool {
	for id, n := range h.used {
		if id == a.ID || n == 0 {
			continue
		}
		if a.Exclusive || s.allocs[id] != nil && s.allocs[id].Exclusive {
			return true
		}
	}
	return false
}

// take removes n slots (all when n <= 0) on host hn from allocation a and
// returns how many it removed. Preconditions: s.mu held.
func (s *Sim) take(a *alloc, hn string, n int) int {
	i := slices.IndexFunc(a.Resources, func(r wire.Resource) bool { return r.Host == hn })
	if i < 0 {
		return 0
	}
	if n <= 0 || n > a.Resources[i].Slots {
		n = a.Resources[i].Slots
	}
	a.Resources[i].Slots -= n
	if a.Resources[i].Slots == 0 {
		a.Resources = slices.Delete(a.Resources, i, i+1)
	}
	if h := s.hosts[hn]; h != nil {
		h.used[a.ID] -= n
		if h.used[a.ID] <= 0 {
			delete(h.used, a.ID)
		}
	}
	for _, r := range s.reclaims {
		if r.AllocationID == a.ID && r.Host == hn && r.Released.IsZero() && !r.Forced {
			r.Released = time.Now()
		}
	}
	return n
}

// end removes allocation id, freeing its slots. Preconditions: s.mu held.
func (s *Sim) end(id, reason string, tell bool) {
	a := s.allocs[id]
	if a == nil {
		return
	}
	freed := slices.Clone(a.Resources)
	for _, r := range freed {
		s.take(a, r.Host, 0)
	}
	delete(s.allocs, id)
	s.order = slices.DeleteFunc(s.order, func(x string) bool { return x == id })
	if tell {
		s.notify(a.ClientName, wire.Notification{Type: wire.AllocationEnded, AllocationID: id, Resources: freed, Reason: reason})
	}
	s.schedule()
}

// Reclaim takes slots on one host back from an allocation, as EGO does
// for another consumer's demand: the client is told (RESOURCE_RECLAIM with
// a deadline of now+grace) and must release them; at the deadline the
// simulator takes them anyway. The allocation's demand drops by as many, so
// they are not given back to it.
func (s *Sim) Reclaim(allocID, hostName string, slots int, grace time.Duration) (*Reclaim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.allocs[allocID]
	if a == nil {
		return nil, fmt.Errorf("no allocation %s", allocID)
	}
	i := slices.IndexFunc(a.Resources, func(r wire.Resource) bool { return r.Host == hostName })
	if i < 0 {
		return nil, fmt.Errorf("allocation %s holds nothing on %s", allocID, hostName)
	}
	if slots <= 0 || slots > a.Resources[i].Slots {
		slots = a.Resources[i].Slots
	}
	r := &Reclaim{AllocationID: allocID, Host: hostName, Slots: slots, Deadline: time.Now().Add(grace)}
	s.reclaims = append(s.reclaims, r)
	a.MaxSlots -= slots
	s.notify(a.ClientName, wire.Notification{Type: wire.ResourceReclaim, AllocationID: allocID, Deadline: r.Deadline,
		Resources: []wire.Resource{{Host: hostName, Address: a.Resources[i].Address, Slots: slots}}})
	s.timers = append(s.timers, time.AfterFunc(grace, func() { s.enforce(r) }))
	return r, nil
}

// enforce takes a reclaim's slots at its deadline if they were not released.
func (s *Sim) enforce(r *Reclaim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !r.Released.IsZero() {
		return
	}
	r.Forced = true
	if a := s.allocs[r.AllocationID]; a != nil {
		s.take(a, r.Host, r.Slots)
		if len(a.Resources) == 0 {
			s.end(a.ID, "reclaimed", true)
		}
	}
	s.schedule()
}

// Reclaims returns every reclaim issued so far.
func (s *Sim) Reclaims() []Reclaim {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Reclaim, len(s.reclaims))
	for i, r := range s.reclaims {
		out[i] = *r
	}
	return out
}

// Allocations returns every allocation, oldest first.
func (s *Sim) Allocations() []wire.Allocation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]wire.Allocation, 0, len(s.order))
	for _, id := range s.order {
		a := s.allocs[id].Allocation
		a.Resources = slices.Clone(a.Resources)
		out = append(out, a)
	}
	return out
}

// Used returns the number of slots held in the whole cluster.
func (s *Sim) Used() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, h := range s.hosts {
		n += h.Slots - h.free()
	}
	return n
}

// janitor frees the allocations of clients silent for longer than their
// time-to-live.
func (s *Sim) janitor() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		for _, c := range s.clients {
			if c.ttl > 0 && time.Since(c.lastSeen) > c.ttl {
				for _, id := range slices.Clone(s.order) {
					if s.allocs[id].ClientName == c.name {
						s.end(id, "client time-to-live expired", true)
					}
				}
			}
		}
		s.mu.Unlock()
	}
}
