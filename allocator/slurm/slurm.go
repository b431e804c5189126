// Package slurm is the allocator backend that gets clone slots from a Slurm
// cluster, the way salloc does: one Slurm job per allocation, one slot per
// allocated CPU, through Slurm's commands or slurmrestd.
package slurm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

// Name is the backend's name in configuration.
const Name = "slurm"

// Description says what the backend is, for listings.
const Description = "slots from a Slurm cluster (salloc/squeue/scancel or slurmrestd)"

// idPrefix starts every allocation ID: "slurm-" and the Slurm job ID.
const idPrefix = "slurm-"

// Job comments mark our jobs. A job that starts an allocation carries
// commentPrefix and a nonce; a job added to allocation N (part of a node
// re-allocated after a partial release) carries commentPrefix+"of=N".
const commentPrefix = "snowflock:"

// running job states: the job holds its nodes.
var running = map[string]bool{"RUNNING": true, "CONFIGURING": true}

// Allocator gets slots from Slurm. It keeps no state of its own beyond the
// record of the jobs it cancelled: Slurm's queue is the truth, so every
// process using the same cluster sees the same allocations.
type Allocator struct {
	cfg      Config
	s        scheduler
	user     string
	poll     time.Duration
	released *releasedLog

	mu    sync.Mutex
	addrs map[string]string // node name → address, from the last node listing
}

var _ allocator.Allocator = (*Allocator)(nil)

// New opens the backend. It does not contact Slurm: a cluster that is down
// makes requests fail with ErrBackendDown, not New.
func New(cfg Config) (*Allocator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("slurm allocator: %v: %w", err, allocator.ErrInvalidArgument)
	}
	name := cfg.User
	if name == "" {
		u, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("slurm allocator: who am I: %v: %w", err, allocator.ErrBackendDown)
		}
		name = u.Username
	}
	a := &Allocator{cfg: cfg, user: name, poll: cfg.PollInterval, released: newReleasedLog(cfg.StateDir)}
	if a.poll == 0 {
		a.poll = DefaultPollInterval
	}
	switch cfg.Mode {
	case ModeREST:
		r, err := newREST(cfg, name)
		if err != nil {
			return nil, fmt.Errorf("slurm allocator: %w", err)
		}
		a.s = r
	default:
		a.s = newCLI(cfg.SlurmConf, name)
	}
	return a, nil
}

// Info names the backend.
func (a *Allocator) Info() allocator.Info {
	return allocator.Info{Name: Name, Description: Description}
}

// Close does nothing: allocations are Slurm jobs and outlive the process.
func (a *Allocator) Close() error { return nil }

func newNonce() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Request grants between req.Min and req.Max slots (CPUs). It asks for as
// many as are idle now, up to Max, with salloc --immediate; when fewer than
// Min are idle it fails (Immediate) or queues a job for Min and waits for
// Slurm to start it. A request larger than the partition fails at once.
func (a *Allocator) Request(ctx context.Context, req allocator.Request) (*allocator.Allocation, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	if err := ctxErr(ctx); err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	part := a.cfg.Partition
	if req.Consumer != "" {
		part = req.Consumer
	}
	for _, v := range []string{part, req.Name, req.ResReq} {
		if strings.ContainsAny(v, "\n\t|") {
			return nil, fmt.Errorf("slurm allocator: %q: want a name without tabs, newlines or '|': %w", v, allocator.ErrInvalidArgument)
		}
	}
	name := req.Name
	if name == "" {
		name = "snowflock"
	}
	spec := jobSpec{
		Name: name, Partition: part, Account: a.cfg.Account, Constraint: req.ResReq,
		Comment: commentPrefix + newNonce(), Exclusive: req.Exclusive, TimeLimit: req.Lease,
	}
	if spec.TimeLimit == 0 {
		spec.TimeLimit = a.cfg.TimeLimit
	}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		nodes, err := a.nodes(ctx)
		if err != nil {
			return nil, fmt.Errorf("slurm allocator: %w", err)
		}
		in, pname := inPartition(nodes, part)
		if len(in) == 0 {
			if part == "" {
				return nil, fmt.Errorf("slurm allocator: the cluster has no default partition: name one (allocator.slurm.partition, sfalloc -p): %w", allocator.ErrInvalidArgument)
			}
			return nil, fmt.Errorf("slurm allocator: no partition %q in the cluster: %w", part, allocator.ErrInvalidArgument)
		}
		capacity, free := slotsOf(in, req.Exclusive)
		if req.Min > capacity {
			return nil, fmt.Errorf("slurm allocator: %d slots asked but partition %s has %d CPUs on nodes in service: %w", req.Min, pname, capacity, allocator.ErrNoneAvailable)
		}
		if free < req.Min || attempt > 0 && time.Since(start) > retryFor {
			if req.Immediate {
				return nil, fmt.Errorf("slurm allocator: %d slots asked, %d idle in partition %s: %w", req.Min, free, pname, allocator.ErrNoneAvailable)
			}
			break
		}
		spec.Tasks, spec.Immediate = min(req.Max, free), true
		id, err := a.s.allocate(ctx, spec)
		if err == nil {
			return a.granted(ctx, id, spec)
		}
		if !errors.Is(err, allocator.ErrNoneAvailable) {
			return nil, fmt.Errorf("slurm allocator: %w", err)
		}
		// Someone took the idle CPUs first, or Slurm has not finished
		// freeing them (a job just cancelled is still COMPLETING while
		// its CPUs already count as idle): look again after a pause.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("slurm allocator: waiting for idle CPUs: %w (%w)", allocator.ErrTimeout, ctx.Err())
		case <-time.After(retryPause(attempt)):
		}
	}
	spec.Tasks, spec.Immediate = req.Min, false
	id, err := a.s.allocate(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	return a.granted(ctx, id, spec)
}

// retryFor bounds the immediate tries of a request that sees enough idle
// CPUs but cannot get them: other requests keep taking them first, or
// Slurm is still finishing jobs that just ended (their CPUs count as idle,
// their nodes are COMPLETING: seconds under slurmrestd's batch jobs).
const retryFor = 15 * time.Second

// retryPause is the pause before immediate try attempt+1: 20 ms doubling
// to at most 500 ms (about 3 s over all the tries).
func retryPause(attempt int) time.Duration {
	return min(20*time.Millisecond<<attempt, 500*time.Millisecond)
}

// slotsOf counts the CPUs of nodes in service and those idle (whole idle
// nodes only, for exclusive requests).
func slotsOf(nodes []nodeInfo, exclusive bool) (capacity, free int) {
	for _, n := range nodes {
		if !n.Usable {
			continue
		}
		capacity += n.CPUs
		if !exclusive || n.Idle == n.CPUs {
			free += n.Idle
		}
	}
	return capacity, free
}

// granted describes a job salloc just granted. If that fails the job is
// cancelled: a grant the caller never hears of would leak.
func (a *Allocator) granted(ctx context.Context, id int, spec jobSpec) (*allocator.Allocation, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	// A fresh grant is one job: no need to look for others in the queue.
	al, _, err := a.describe(ctx, id, []jobSummary{{ID: id}})
	if err != nil {
		_ = a.s.cancel(ctx, id)
		return nil, fmt.Errorf("slurm allocator: job %d granted but unreadable, cancelled: %w", id, err)
	}
	return al, nil
}

// Get returns allocation id.
func (a *Allocator) Get(ctx context.Context, id string) (*allocator.Allocation, error) {
	n, err := parseID(id)
	if err != nil {
		return nil, err
	}
	if err := ctxErr(ctx); err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	al, err := a.get(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	return al, nil
}

// parseID reads "slurm-N".
func parseID(id string) (int, error) {
	var n int
	rest, ok := strings.CutPrefix(id, idPrefix)
	if ok {
		if _, err := fmt.Sscanf(rest, "%d", &n); err != nil || fmt.Sprint(n) != rest || n <= 0 {
			ok = false
		}
	}
	if !ok {
		return 0, fmt.Errorf("slurm allocator: no allocation %q (slurm allocation IDs are slurm-JOBID): %w", id, allocator.ErrUnknownAllocation)
	}
	return n, nil
}

// members returns the running jobs of allocation n in queue.
func members(queue []jobSummary, n int) []jobSummary {
	var jobs []jobSummary
	for _, j := range queue {
		if running[j.State] && strings.HasPrefix(j.Comment, commentPrefix) && owner(j) == n {
			jobs = append(jobs, j)
		}
	}
	return jobs
}

// owner is the allocation a job of ours belongs to.
func owner(j jobSummary) int {
	if rest, ok := strings.CutPrefix(j.Comment, commentPrefix+"of="); ok {
		var n int
		if _, err := fmt.Sscanf(rest, "%d", &n); err == nil {
			return n
		}
	}
	return j.ID
}

// get reads allocation n from Slurm.
func (a *Allocator) get(ctx context.Context, n int) (*allocator.Allocation, error) {
	q, err := a.s.queue(ctx, false)
	if err != nil {
		return nil, err
	}
	al, _, err := a.describe(ctx, n, members(q, n))
	return al, err
}

// describe builds allocation n from its jobs.
func (a *Allocator) describe(ctx context.Context, n int, of []jobSummary) (*allocator.Allocation, []*jobInfo, error) {
	var jobs []*jobInfo
	for _, js := range of {
		j, err := a.s.job(ctx, js.ID)
		if err != nil {
			return nil, nil, err
		}
		if j != nil && running[j.State] {
			jobs = append(jobs, j)
		}
	}
	if len(jobs) == 0 {
		return nil, nil, fmt.Errorf("no allocation %s%d (no running job of ours): %w", idPrefix, n, allocator.ErrUnknownAllocation)
	}
	al := &allocator.Allocation{ID: fmt.Sprintf("%s%d", idPrefix, n), Backend: Name, Name: jobs[0].Name, Consumer: jobs[0].Partition}
	for _, j := range jobs {
		slots, err := a.slots(ctx, j)
		if err != nil {
			return nil, nil, err
		}
		for _, s := range slots {
			al.Slots = addSlot(al.Slots, s)
		}
		if al.Created.IsZero() || (!j.Start.IsZero() && j.Start.Before(al.Created)) {
			al.Created = j.Start
		}
		if !j.End.IsZero() && j.TimeLimit > 0 && (al.Expires.IsZero() || j.End.Before(al.Expires)) {
			al.Expires = j.End
		}
	}
	al.Granted = allocator.Total(al.Slots)
	return al, jobs, nil
}

// jobSlots is a job's slots: its CPUs per node, trimmed to its task count
// where Slurm gave whole cores or nodes (SMT, --exclusive).
func jobSlots(j *jobInfo) []allocator.Slot {
	var slots []allocator.Slot
	left := -1
	if j.NumTasks > 0 {
		total := 0
		for _, h := range j.Hosts {
			total += h.CPUs
		}
		if total > j.NumTasks {
			left = j.NumTasks
		}
	}
	for _, h := range j.Hosts {
		c := h.CPUs
		if left >= 0 {
			c = min(c, left)
			left -= c
		}
		if c > 0 {
			slots = append(slots, allocator.Slot{Host: h.Host, Count: c})
		}
	}
	return slots
}

func addSlot(slots []allocator.Slot, s allocator.Slot) []allocator.Slot {
	for i := range slots {
		if slots[i].Host == s.Host {
			slots[i].Count += s.Count
			return slots
		}
	}
	return append(slots, s)
}

// nodes lists the cluster's nodes, remembering their addresses.
func (a *Allocator) nodes(ctx context.Context) ([]nodeInfo, error) {
	nodes, err := a.s.nodes(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.addrs = make(map[string]string, len(nodes))
	for _, n := range nodes {
		a.addrs[n.Name] = n.Addr
	}
	return nodes, nil
}

// slots is job j's slots with their hosts' addresses.
func (a *Allocator) slots(ctx context.Context, j *jobInfo) ([]allocator.Slot, error) {
	slots := jobSlots(j)
	addrs, err := a.addresses(ctx, slots)
	if err != nil {
		return nil, err
	}
	for i := range slots {
		if slots[i].Address = addrs[slots[i].Host]; slots[i].Address == "" {
			slots[i].Address = slots[i].Host
		}
	}
	return slots, nil
}

// addresses maps node names to their addresses (NodeAddr), asking Slurm
// only when the host of one of slots is not known yet.
func (a *Allocator) addresses(ctx context.Context, slots []allocator.Slot) (map[string]string, error) {
	a.mu.Lock()
	m := a.addrs
	a.mu.Unlock()
	for _, s := range slots {
		if _, ok := m[s.Host]; !ok {
			if _, err := a.nodes(ctx); err != nil {
				return nil, err
			}
			a.mu.Lock()
			m = a.addrs
			a.mu.Unlock()
			break
		}
	}
	return m, nil
}

// List returns the allocations of our user, oldest first.
func (a *Allocator) List(ctx context.Context) ([]allocator.Allocation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	q, err := a.s.queue(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	var owners []int
	seen := map[int]bool{}
	for _, j := range q {
		if running[j.State] && strings.HasPrefix(j.Comment, commentPrefix) && !seen[owner(j)] {
			seen[owner(j)] = true
			owners = append(owners, owner(j))
		}
	}
	slices.Sort(owners)
	out := []allocator.Allocation{}
	for _, n := range owners {
		al, _, err := a.describe(ctx, n, members(q, n))
		if errors.Is(err, allocator.ErrUnknownAllocation) {
			continue // ended meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("slurm allocator: %w", err)
		}
		out = append(out, *al)
	}
	return out, nil
}
