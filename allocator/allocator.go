// Package allocator defines how SnowFlock asks for clone slots: the Allocator
// interface, its request and allocation types, and the error classes every
// backend (static, slurm, ego, plugins) returns.
//
// # Lifecycle
//
// An Allocator is opened by a backend's constructor (see allocator/builtin for
// the list of built-in backends) and used as follows:
//
//  1. Request asks for between Min and Max slots. It blocks until at least Min
//     slots can be granted, the context's deadline passes (ErrTimeout), or — with
//     Immediate — returns at once with ErrNoneAvailable when Min slots are not
//     free now. A grant is an Allocation: an ID and the slots per host, with
//     Min ≤ Granted() ≤ Max.
//  2. The holder keeps the allocation alive with Renew before its lease runs
//     out. An allocation whose lease expires is taken back by the backend, so a
//     crashed holder cannot keep slots forever.
//  3. Release gives back all slots of an allocation, or some slots on some
//     hosts. Releasing the last slot ends the allocation.
//  4. Events reports allocations that the backend took back on its own
//     (lease expiry, a scheduler's reclaim or cancellation).
//  5. Close releases the Allocator's resources; it never releases allocations,
//     which are durable and outlive the process that made them.
//
// Every method returns errors wrapping exactly one of the classes below, so
// callers test them with errors.Is, also across process boundaries.
package allocator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Error classes. Backends wrap them with context (fmt.Errorf("...: %w", Err...)).
var (
	// ErrInvalidArgument: the request itself is wrong (n ≤ 0, min > max, a
	// release of more slots than held, an unknown host). Retrying cannot help.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNoneAvailable: not enough slots are free now (Immediate requests), or
	// the pool can never hold the minimum asked for.
	ErrNoneAvailable = errors.New("not enough slots available")
	// ErrTimeout: the deadline passed: before enough slots were free, or
	// while the backend was busy.
	ErrTimeout = errors.New("deadline passed")
	// ErrUnknownAllocation: no allocation has that ID (never granted, released,
	// or expired).
	ErrUnknownAllocation = errors.New("unknown allocation")
	// ErrBackendDown: the backend cannot be reached or answered nonsense.
	ErrBackendDown = errors.New("allocator backend unavailable")
)

// Request describes the slots wanted. Its deadline is the context's.
type Request struct {
	// Min and Max bound the number of slots granted: Min ≤ granted ≤ Max.
	Min, Max int
	// Name labels the allocation (a job name); optional.
	Name string
	// Consumer is the scheduler's accounting entity: an EGO consumer or a
	// Slurm partition. Optional; the static backend records it only.
	Consumer string
	// ResReq is a backend-specific resource requirement (EGO resreq, Slurm
	// constraint, static host tags). Optional.
	ResReq string
	// Exclusive asks for hosts that no other allocation uses.
	Exclusive bool
	// Immediate fails with ErrNoneAvailable instead of waiting.
	Immediate bool
	// Lease is how long the allocation lives without Renew; 0 means the
	// backend's default.
	Lease time.Duration
}

// Validate checks the parts of a request that do not depend on the backend.
func (r Request) Validate() error {
	switch {
	case r.Max <= 0:
		return fmt.Errorf("slot count must be at least 1, got %d: %w", r.Max, ErrInvalidArgument)
	case r.Min <= 0:
		return fmt.Errorf("minimum slot count must be at least 1, got %d: %w", r.Min, ErrInvalidArgument)
	case r.Min > r.Max:
		return fmt.Errorf("minimum %d is larger than maximum %d: %w", r.Min, r.Max, ErrInvalidArgument)
	}
	return ValidateLease(r.Lease)
}

// MinLease is the shortest lease a backend grants.
const MinLease = time.Second

// ValidateLease accepts 0 (the backend's default) or at least MinLease.
func ValidateLease(d time.Duration) error {
	if d != 0 && d < MinLease {
		return fmt.Errorf("lease %s is shorter than the minimum %s: %w", d, MinLease, ErrInvalidArgument)
	}
	return nil
}

// Slot is a number of clone slots on one host.
type Slot struct {
	Host    string `json:"host"`
	Address string `json:"address"`
	Count   int    `json:"count"`
}

// Allocation is a grant of slots.
type Allocation struct {
	ID       string `json:"id"`
	Backend  string `json:"backend"`
	Granted  int    `json:"granted"`
	Slots    []Slot `json:"slots"`
	Name     string `json:"name,omitempty"`
	Consumer string `json:"consumer,omitempty"`
	// Exclusive allocations keep other allocations off their hosts.
	Exclusive bool      `json:"exclusive,omitempty"`
	Created   time.Time `json:"created"`
	// Expires is when the lease runs out unless renewed; zero means never.
	Expires time.Time `json:"expires,omitzero"`
}

// Expired says whether the allocation's lease has run out at now.
func (a *Allocation) Expired(now time.Time) bool {
	return !a.Expires.IsZero() && !now.Before(a.Expires)
}

// FormatSlots writes slots as "host:count,host:count".
func FormatSlots(slots []Slot) string {
	parts := make([]string, len(slots))
	for i, s := range slots {
		parts[i] = fmt.Sprintf("%s:%d", s.Host, s.Count)
	}
	return strings.Join(parts, ",")
}

// Total returns the number of slots in slots, summed over hosts.
func Total(slots []Slot) int {
	n := 0
	for _, s := range slots {
		n += s.Count
	}
	return n
}

// EventKind says why an allocation changed without its holder asking.
type EventKind string

const (
	// EventExpired: the lease ran out and the backend took the slots back.
	EventExpired EventKind = "expired"
	// EventReclaimed: the scheduler takes slots back (EGO reclaim, Slurm job
	// cancelled or timed out). Deadline, when set, is when they are taken
	// whether released or not.
	EventReclaimed EventKind = "reclaimed"
)

// Event reports slots taken back from an allocation by the backend.
type Event struct {
	Kind         EventKind `json:"kind"`
	AllocationID string    `json:"allocation_id"`
	// Slots taken back; all slots of the allocation when it ended.
	Slots    []Slot    `json:"slots"`
	Reason   string    `json:"reason,omitempty"`
	Deadline time.Time `json:"deadline,omitzero"`
	Time     time.Time `json:"time"`
}

// Info describes a backend.
type Info struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// Allocator grants clone slots. See the package documentation for its
// lifecycle. Implementations are safe for concurrent use.
type Allocator interface {
	// Info names the backend.
	Info() Info
	// Request grants between req.Min and req.Max slots.
	Request(ctx context.Context, req Request) (*Allocation, error)
	// Release gives back the listed slots (Host and Count; Address is
	// ignored; Count 0 means all slots on that host) of allocation id, or all
	// of them when slots is empty. It
	// returns what remains of the allocation, nil when nothing does. A
	// release of more than is held fails with ErrInvalidArgument and changes
	// nothing.
	Release(ctx context.Context, id string, slots []Slot) (*Allocation, error)
	// Renew extends the lease of allocation id by lease from now (the
	// backend's default when 0).
	Renew(ctx context.Context, id string, lease time.Duration) (*Allocation, error)
	// Get returns one allocation.
	Get(ctx context.Context, id string) (*Allocation, error)
	// List returns the allocations the backend holds, oldest first.
	List(ctx context.Context) ([]Allocation, error)
	// Events streams slots taken back by the backend until ctx ends; the
	// channel is closed then.
	Events(ctx context.Context) (<-chan Event, error)
	// Close frees the Allocator's own resources; allocations stay.
	Close() error
}

// HostUsage is one host's slots and how many of them are held.
type HostUsage struct {
	Host      string `json:"host"`
	Address   string `json:"address"`
	Slots     int    `json:"slots"`
	Held      int    `json:"held"`
	Exclusive bool   `json:"exclusive,omitempty"`
}

// HostReporter is an optional interface of backends that can report every
// host's slots and use (sfalloc hosts).
type HostReporter interface {
	Hosts(ctx context.Context) ([]HostUsage, error)
}
