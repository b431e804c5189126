package slurm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

// reallocateWait bounds the wait for a node's kept slots to be allocated
// again after a partial release.
const reallocateWait = 15 * time.Second

// Release gives back slots of allocation id (all when slots is empty).
// Whole nodes leave by shrinking their job (scontrol update NodeList=…), the
// last node by cancelling it. Slurm cannot take CPUs from a job within a
// node, so releasing part of a node's slots takes the node out of its job
// and allocates the slots kept there again, at once, as a job of the same
// allocation; if another job takes them in between, the release fails with
// ErrNoneAvailable naming what was lost.
func (a *Allocator) Release(ctx context.Context, id string, slots []allocator.Slot) (*allocator.Allocation, error) {
	if len(slots) == 0 {
		return nil, a.releaseAll(ctx, id)
	}
	n, al, jobs, err := a.load(ctx, id)
	if err != nil {
		return nil, err
	}
	drop, err := releaseCounts(al, slots)
	if err != nil {
		return nil, fmt.Errorf("slurm allocator: release from %s: %w", id, err)
	}
	held := map[string]int{}
	for _, s := range al.Slots {
		held[s.Host] = s.Count
	}
	// Which hosts leave which job, and which hosts keep some slots.
	keep := map[string]int{}
	for h, c := range drop {
		if c < held[h] {
			keep[h] = held[h] - c
		}
	}
	var cancel []*jobInfo
	type shrinking struct {
		j     *jobInfo
		hosts []string
	}
	var shrinks []shrinking
	for _, j := range jobs {
		var stay []string
		for _, s := range jobSlots(j) {
			if _, leaving := drop[s.Host]; !leaving {
				stay = append(stay, s.Host)
			}
		}
		switch {
		case len(stay) == 0:
			cancel = append(cancel, j)
		case len(stay) < len(jobSlots(j)):
			shrinks = append(shrinks, shrinking{j, stay})
		}
	}
	for _, sh := range shrinks {
		err := a.s.shrink(ctx, sh.j.ID, sh.hosts)
		if err == nil {
			continue
		}
		if !errors.Is(err, errCannotResize) {
			return nil, fmt.Errorf("slurm allocator: release from %s: shrinking job %d to %s: %w", id, sh.j.ID, strings.Join(sh.hosts, ","), err)
		}
		// Slurm without accounting resizes a job only once: allocate the
		// hosts that stay anew instead.
		cancel = append(cancel, sh.j)
		for _, s := range jobSlots(sh.j) {
			if slices.Contains(sh.hosts, s.Host) {
				keep[s.Host] += s.Count
			}
		}
	}
	keys := make([]jobKey, len(cancel))
	ids := make([]int, len(cancel))
	for i, j := range cancel {
		keys[i], ids[i] = jobKey{j.ID, j.Start}, j.ID
	}
	a.released.mark(keys...)
	if err := a.s.cancel(ctx, ids...); err != nil {
		return nil, fmt.Errorf("slurm allocator: release from %s: %w", id, err)
	}
	a.waitFreed(ctx, ids)
	var lost []string
	for _, h := range slices.Sorted(maps.Keys(keep)) {
		spec := jobSpec{
			Tasks: keep[h], Name: al.Name, Partition: jobs[0].Partition, Account: a.cfg.Account,
			Comment: fmt.Sprintf("%sof=%d", commentPrefix, n), Hosts: []string{h},
		}
		if !al.Expires.IsZero() {
			spec.TimeLimit = max(time.Until(al.Expires), time.Minute)
		}
		// The node is busy until Slurm has finished taking it from the
		// old job: wait for it, a short while.
		actx, cancel := context.WithTimeout(ctx, reallocateWait)
		_, err := a.s.allocate(actx, spec)
		cancel()
		if err != nil {
			lost = append(lost, fmt.Sprintf("%d on %s (%v)", keep[h], h, err))
		}
	}
	left, err := a.get(ctx, n)
	if errors.Is(err, allocator.ErrUnknownAllocation) {
		left, err = nil, nil
	}
	if len(lost) > 0 {
		return left, fmt.Errorf("slurm allocator: release from %s: Slurm cannot shrink a job within a node, so the slots kept there were allocated again, but another job took them first: lost %s: %w",
			id, strings.Join(lost, "; "), allocator.ErrNoneAvailable)
	}
	if err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	return left, nil
}

// releaseCounts checks a release against an allocation and returns the
// slots to drop per host (every host for an empty list).
func releaseCounts(al *allocator.Allocation, slots []allocator.Slot) (map[string]int, error) {
	held := map[string]int{}
	for _, s := range al.Slots {
		held[s.Host] = s.Count
	}
	drop := map[string]int{}
	if len(slots) == 0 {
		return held, nil
	}
	for _, s := range slots {
		h, ok := held[s.Host]
		switch {
		case !ok:
			return nil, fmt.Errorf("host %q holds no slot of the allocation: %w", s.Host, allocator.ErrInvalidArgument)
		case s.Count < 0:
			return nil, fmt.Errorf("negative count %d for host %s: %w", s.Count, s.Host, allocator.ErrInvalidArgument)
		case s.Count == 0:
			drop[s.Host] += h
		default:
			drop[s.Host] += s.Count
		}
		if drop[s.Host] > h {
			return nil, fmt.Errorf("releasing %d slots on %s, which holds %d: %w", drop[s.Host], s.Host, h, allocator.ErrInvalidArgument)
		}
	}
	return drop, nil
}

// Renew extends the Slurm time limit of the allocation's jobs so that they
// run at least lease from now (Slurm counts whole minutes). Slurm lets only
// its operators raise a time limit: other users get ErrInvalidArgument
// unless the limit is already long enough. Jobs without a time limit need
// no renewal.
func (a *Allocator) Renew(ctx context.Context, id string, lease time.Duration) (*allocator.Allocation, error) {
	if err := allocator.ValidateLease(lease); err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	if lease == 0 {
		lease = a.cfg.TimeLimit
	}
	n, al, jobs, err := a.load(ctx, id)
	if err != nil {
		return nil, err
	}
	if lease == 0 {
		return al, nil
	}
	changed := false
	for _, j := range jobs {
		want := time.Since(j.Start) + lease
		if j.TimeLimit == 0 || j.Start.IsZero() || minutes(want) <= minutes(j.TimeLimit) {
			continue
		}
		if err := a.s.setTimeLimit(ctx, j.ID, want); err != nil {
			return nil, fmt.Errorf("slurm allocator: renewing %s: time limit of job %d: %w", id, j.ID, err)
		}
		changed = true
	}
	if !changed {
		return al, nil
	}
	al, err = a.get(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	return al, nil
}

// load reads allocation id and its jobs.
func (a *Allocator) load(ctx context.Context, id string) (int, *allocator.Allocation, []*jobInfo, error) {
	n, err := parseID(id)
	if err != nil {
		return 0, nil, nil, err
	}
	if err := ctxErr(ctx); err != nil {
		return 0, nil, nil, fmt.Errorf("slurm allocator: %w", err)
	}
	q, err := a.s.queue(ctx, false)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("slurm allocator: %w", err)
	}
	al, jobs, err := a.describe(ctx, n, members(q, n))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("slurm allocator: %w", err)
	}
	return n, al, jobs, nil
}

// releaseAll cancels every job of allocation id: the queue names them, no
// job needs describing.
func (a *Allocator) releaseAll(ctx context.Context, id string) error {
	n, err := parseID(id)
	if err != nil {
		return err
	}
	if err := ctxErr(ctx); err != nil {
		return fmt.Errorf("slurm allocator: %w", err)
	}
	q, err := a.s.queue(ctx, false)
	if err != nil {
		return fmt.Errorf("slurm allocator: %w", err)
	}
	var keys []jobKey
	var ids []int
	for _, j := range members(q, n) {
		keys, ids = append(keys, jobKey{j.ID, j.Start}), append(ids, j.ID)
	}
	if len(ids) == 0 {
		return fmt.Errorf("slurm allocator: no allocation %s (no running job of ours): %w", id, allocator.ErrUnknownAllocation)
	}
	a.released.mark(keys...)
	if err := a.s.cancel(ctx, ids...); err != nil {
		return fmt.Errorf("slurm allocator: release of %s: %w", id, err)
	}
	return nil
}

// freedWait bounds how long Release waits for Slurm to finish ending the
// jobs it cancelled.
const freedWait = 10 * time.Second

// waitFreed waits, a bounded while, until the cancelled jobs have left
// COMPLETING: until then Slurm counts their CPUs as idle but schedules
// nothing on them, and a request right after the release would find them
// busy. Slots given back are then really free.
func (a *Allocator) waitFreed(ctx context.Context, ids []int) {
	ctx, cancel := context.WithTimeout(ctx, freedWait)
	defer cancel()
	pause := 20 * time.Millisecond
	for _, id := range ids {
		for {
			j, err := a.s.job(ctx, id)
			if err != nil || j == nil || !strings.Contains(j.State, "COMPLETING") && j.State != "RUNNING" && j.State != "CONFIGURING" {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, 250*time.Millisecond)
		}
	}
}
