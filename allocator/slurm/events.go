package slurm

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

// tracked is a running job of ours that Events watches.
type tracked struct {
	job      *jobInfo
	alloc    int
	nodeList string
	slots    []allocator.Slot
}

// endReasons explains the states a job ends in.
var endReasons = map[string]string{
	"CANCELLED":     "cancelled outside SnowFlock (scancel)",
	"TIMEOUT":       "its time limit (the lease) was reached",
	"PREEMPTED":     "preempted by a higher-priority job",
	"NODE_FAIL":     "a node failed",
	"FAILED":        "failed",
	"DEADLINE":      "its deadline passed",
	"BOOT_FAIL":     "a node failed to boot",
	"OUT_OF_MEMORY": "out of memory",
	"COMPLETED":     "completed",
	"REVOKED":       "revoked (federation)",
	"SUSPENDED":     "suspended",
}

// Events reports, as EventReclaimed, every job of ours that ends without
// this backend releasing it: an administrator's scancel, the time limit,
// preemption, node failure. It polls the queue every poll interval and
// reports jobs it saw running since it started.
func (a *Allocator) Events(ctx context.Context) (<-chan allocator.Event, error) {
	known := map[int]*tracked{}
	if err := a.track(ctx, known); err != nil {
		return nil, fmt.Errorf("slurm allocator: events: %w", err)
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
			evs := a.ended(ctx, known)
			_ = a.track(ctx, known) // a failed look is retried next time
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

// track adds our running jobs to known (and refreshes those whose nodes
// changed).
func (a *Allocator) track(ctx context.Context, known map[int]*tracked) error {
	q, err := a.s.queue(ctx, false)
	if err != nil {
		return err
	}
	for _, js := range q {
		if !running[js.State] || !strings.HasPrefix(js.Comment, commentPrefix) {
			continue
		}
		if k := known[js.ID]; k != nil && k.nodeList == js.NodeList {
			continue
		}
		j, err := a.s.job(ctx, js.ID)
		if err != nil {
			return err
		}
		if j == nil || !running[j.State] {
			continue
		}
		slots, err := a.slots(ctx, j)
		if err != nil {
			return err
		}
		known[js.ID] = &tracked{job: j, alloc: owner(js), nodeList: js.NodeList, slots: slots}
	}
	return nil
}

// ended returns events for known jobs that are no longer running, and
// forgets them.
func (a *Allocator) ended(ctx context.Context, known map[int]*tracked) []allocator.Event {
	if len(known) == 0 {
		return nil
	}
	q, err := a.s.queue(ctx, true)
	if err != nil {
		return nil
	}
	state := map[int]jobSummary{}
	for _, j := range q {
		state[j.ID] = j
	}
	var evs []allocator.Event
	for id, k := range known {
		js, listed := state[id]
		if listed && (running[js.State] || js.State == "COMPLETING") {
			// Still running, or ending: wait for the state it ends in.
			continue
		}
		delete(known, id)
		if a.released.has(jobKey{k.job.ID, k.job.Start}) {
			continue
		}
		why := "no longer in Slurm's queue"
		if listed {
			why = endReasons[strings.TrimSuffix(js.State, "+")]
			if why == "" {
				why = strings.ToLower(js.State)
			}
			why = js.State + ": " + why
		}
		evs = append(evs, allocator.Event{
			Kind:         allocator.EventReclaimed,
			AllocationID: fmt.Sprintf("%s%d", idPrefix, k.alloc),
			Slots:        k.slots,
			Reason:       fmt.Sprintf("Slurm job %d ended: %s", id, why),
			Time:         time.Now(),
		})
	}
	return evs
}
