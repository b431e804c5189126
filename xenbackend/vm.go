package xenbackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/internal/xenchan"
	"github.com/snowflock/snowflock/internal/xenstore"
)

// VM is one domain.
type VM struct {
	b        *Backend
	id       string
	dir      string
	name     string // Xen domain name
	hostname string
	m        machine
	mac      string // the vif's MAC ("": no vif)
	domid    uint32
	started  time.Duration

	done     chan struct{}
	doneOnce sync.Once
	// saving is set while xl save runs: the guest is then suspended,
	// which Xen reports as a shutdown (reason suspend) that the reaper
	// must not act on.
	saving atomic.Bool

	mu          sync.Mutex
	conn        *xenchan.Conn // the open guest channel
	suspendedAt time.Time     // when the reaper first saw the domain suspended by another tool
}

var _ clonesvc.VM = (*VM)(nil)

func (b *Backend) newVM(id, dir, hostname string, m machine) *VM {
	return &VM{b: b, id: id, dir: dir, name: domainName(id), hostname: hostname, m: m, done: make(chan struct{})}
}

// ID is the service's name for the VM.
func (v *VM) ID() string { return v.id }

// DomID is the VM's Xen domain id.
func (v *VM) DomID() uint32 { return v.domid }

// Record returns what Attach needs.
func (v *VM) Record() clonesvc.Record {
	st, _ := json.Marshal(recordState{ID: v.id, Dir: v.dir, Name: v.name, DomID: v.domid, Machine: v.m, Hostname: v.hostname, MAC: v.mac})
	return clonesvc.Record{Backend: Name, Version: recordVersion, State: st}
}

// Pause stops the domain's vCPUs.
func (v *VM) Pause(ctx context.Context) error { return v.xlDomain(ctx, "pause") }

// Resume continues them.
func (v *VM) Resume(ctx context.Context) error { return v.xlDomain(ctx, "unpause") }

// xlDomain runs `xl VERB <domid>` after checking the domain is still ours.
func (v *VM) xlDomain(ctx context.Context, verb string) error {
	if err := v.alive(ctx); err != nil {
		return err
	}
	if _, err := v.b.xl.run(ctx, verb, fmt.Sprint(v.domid)); err != nil {
		return failed(v.id, err)
	}
	return nil
}

// alive fails unless the VM's domain still runs.
func (v *VM) alive(ctx context.Context) error {
	ok, err := domainIs(ctx, v.b.store(), v.domid, v.name)
	if err != nil {
		return failed(v.id, err)
	}
	if !ok {
		v.markDone()
		return failed(v.id, fmt.Errorf("domain %d (%s) is gone", v.domid, v.name))
	}
	return nil
}

// DialChannel opens the guest channel: a byte stream over xenstore nodes
// under the domain's own data/snowflock (internal/xenchan). A new one
// replaces the old.
func (v *VM) DialChannel(ctx context.Context) (io.ReadWriteCloser, error) {
	if err := v.alive(ctx); err != nil {
		return nil, err
	}
	c, err := xenchan.Host(ctx, v.b.store(), v.domid)
	if err != nil {
		return nil, failed(v.id, fmt.Errorf("guest channel: %w", err))
	}
	v.mu.Lock()
	old := v.conn
	v.conn = c
	v.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return c, nil
}

// ConsolePath is the console log xenconsoled writes for the domain.
func (v *VM) ConsolePath() string {
	return filepath.Join(v.b.cfg.ConsoleDir, "guest-"+v.name+".log")
}

// consoleTail returns the last n bytes of the domain's console log.
func (v *VM) consoleTail(n int64) string {
	f, err := os.Open(v.ConsolePath())
	if err != nil {
		return fmt.Sprintf("(no console log: %v)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return string(b)
}

// Done is closed when the domain is gone.
func (v *VM) Done() <-chan struct{} { return v.done }

func (v *VM) markDone() {
	v.doneOnce.Do(func() {
		close(v.done)
		v.b.unwatch(v)
		v.mu.Lock()
		if v.conn != nil {
			v.conn.Close()
		}
		v.mu.Unlock()
	})
}

// Destroy destroys the domain and removes the VM's files.
func (v *VM) Destroy(ctx context.Context) error {
	if v.domid != 0 {
		ok, err := domainIs(ctx, v.b.store(), v.domid, v.name)
		if err != nil {
			return failed(v.id, err)
		}
		if ok {
			if _, err := v.b.xl.run(ctx, "destroy", fmt.Sprint(v.domid)); err != nil {
				if still, _ := domainIs(ctx, v.b.store(), v.domid, v.name); still {
					return failed(v.id, err)
				}
			}
		}
	}
	v.markDone()
	v.removeFiles()
	return nil
}

// removeFiles removes what the backend made in the VM's directory, and
// the console log.
func (v *VM) removeFiles() {
	for _, f := range []string{fileConfig, fileName, fileSave, fileLoad} {
		os.Remove(filepath.Join(v.dir, f))
	}
	os.Remove(v.ConsolePath())
}

// The monitor. Domains are built with xl -e: no xl process stays behind
// to carry out on_poweroff/on_crash (xl's monitoring child crashed now and
// then in the test bed's dom0), so the backend is the reaper. One
// @releaseDomain watch — Xen fires it when any domain shuts down, crashes
// or is destroyed — makes it look at its VMs: a domain that shut down or
// crashed is destroyed, and Done of every VM whose domain is gone is
// closed. A poll every few seconds catches a domain destroyed behind the
// backend's back and a missed event.
const monitorPoll = 3 * time.Second

// When the xenstore connection drops (xenstored restarted, or closed it),
// the monitor opens a new one and watches again; lookups and guest
// channels use the new connection from then on (a guest channel on the
// old one fails, and the service dials it again).
func (b *Backend) startMonitor() error {
	w, err := b.watchReleases(b.store())
	if err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(monitorPoll)
		defer t.Stop()
		for {
			reap := false
			select {
			case <-b.ctx.Done():
				w.Close()
				return
			case _, ok := <-w.Events():
				if !ok {
					if w = b.reconnect(); w == nil {
						return
					}
				}
				reap = true
			case <-t.C:
			}
			b.checkVMs(reap)
		}
	}()
	return nil
}

// watchReleases watches @releaseDomain on xs.
func (b *Backend) watchReleases(xs *xenstore.Client) (*xenstore.Watch, error) {
	w, err := xs.Watch(b.ctx, xenstore.ReleaseDomain, fmt.Sprintf("sfld-release-%d", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", xenstore.ReleaseDomain, err)
	}
	return w, nil
}

// Reconnection backoff.
const (
	reconnectFirst = 200 * time.Millisecond
	reconnectMax   = 5 * time.Second
)

// reconnect replaces the xenstore connection after its watch closed, and
// returns the new connection's watch; nil once the backend is closed.
func (b *Backend) reconnect() *xenstore.Watch {
	old := b.store()
	cause := old.Err()
	if cause == nil {
		cause = errors.New("the domain-release watch closed")
	}
	b.log.Error().Err(cause).Msg("xenstore connection lost; reconnecting")
	old.Close()
	delay := reconnectFirst
	for try := 1; ; try++ {
		select {
		case <-b.ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, reconnectMax)
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		xs, err := xenstore.Open(ctx)
		cancel()
		if err != nil {
			b.log.Warn().Err(err).Int("try", try).Msg("xenstore reconnect")
			continue
		}
		w, err := b.watchReleases(xs)
		if err != nil {
			xs.Close()
			b.log.Warn().Err(err).Int("try", try).Msg("xenstore reconnect")
			continue
		}
		b.xsMu.Lock()
		b.xs = xs
		b.xsMu.Unlock()
		if b.ctx.Err() != nil { // closed meanwhile: Close saw the old one
			xs.Close()
			return nil
		}
		b.log.Info().Int("try", try).Msg("xenstore reconnected")
		return w
	}
}

// suspendGrace is how long the reaper leaves a domain that is suspended
// while the backend is not saving it: a save or migration by another tool
// (an operator's own `xl save -c`) suspends the guest for as long as it
// copies memory. One suspended for longer was left so by a save that died
// (xl cannot resume it), and is destroyed.
const suspendGrace = 5 * time.Minute

// checkVMs closes Done of the VMs whose domain is gone; with reap (a
// domain ended, or one of the backend's domains is suspended) it first
// destroys those whose domain shut down or crashed.
func (b *Backend) checkVMs(reap bool) {
	b.mu.Lock()
	vms := make([]*VM, 0, len(b.vms))
	for v := range b.vms {
		vms = append(vms, v)
	}
	b.mu.Unlock()
	if len(vms) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	for _, v := range vms {
		if !v.suspendedSince().IsZero() {
			reap = true
		}
	}
	if reap {
		b.reap(ctx, vms)
	}
	for _, v := range vms {
		ok, err := domainIs(ctx, b.store(), v.domid, v.name)
		if err == nil && !ok {
			b.log.Info().Str("vm", v.id).Uint32("domid", v.domid).Msg("domain ended")
			v.markDone()
		} else if err != nil && !errors.Is(err, context.Canceled) {
			b.log.Debug().Str("vm", v.id).Err(err).Msg("domain check")
		}
	}
}

// reap destroys the VMs whose domain shut down or crashed, and those
// suspended for longer than suspendGrace while the backend was not saving
// them.
func (b *Backend) reap(ctx context.Context, vms []*VM) {
	states, err := b.domainStates(ctx)
	if err != nil {
		b.log.Warn().Err(err).Msg("list domains")
		return
	}
	for _, v := range vms {
		st := states[v.domid]
		if st != domainSuspended || v.saving.Load() {
			v.setSuspendedSince(time.Time{})
		}
		if v.saving.Load() {
			continue
		}
		switch st {
		case domainEnded:
			b.log.Info().Str("vm", v.id).Uint32("domid", v.domid).Msg("domain shut down; destroying it")
		case domainSuspended:
			since := v.suspendedSince()
			if since.IsZero() {
				b.log.Warn().Str("vm", v.id).Uint32("domid", v.domid).Dur("grace", suspendGrace).
					Msg("domain suspended by another tool (xl save or migrate?); destroyed if it stays so")
				v.setSuspendedSince(time.Now())
				continue
			}
			if time.Since(since) < suspendGrace {
				continue
			}
			b.log.Warn().Str("vm", v.id).Uint32("domid", v.domid).Msg("domain left suspended; destroying it")
		default:
			continue
		}
		if _, err := b.xl.run(ctx, "destroy", fmt.Sprint(v.domid)); err != nil {
			b.log.Warn().Str("vm", v.id).Err(err).Msg("destroy")
		}
	}
}

// domainState is what the reaper reads of a domain in `xl list`.
type domainState int

const (
	domainLive      domainState = iota // running, blocked or paused
	domainEnded                        // shut down (not for suspend) or crashed
	domainSuspended                    // shut down for suspend: being saved
)

// domainStates lists the domains' states.
func (b *Backend) domainStates(ctx context.Context) (map[uint32]domainState, error) {
	out, err := b.xl.run(ctx, "list")
	if err != nil {
		return nil, err
	}
	return parseList(string(out)), nil
}

// parseList reads `xl list`: Name ID Mem VCPUs State Time(s), State being
// six flags: r (running), b (blocked), p (paused), s (shut down), the
// shutdown reason (- poweroff, r reboot, s suspend, c crash, w watchdog,
// S soft reset) and d (dying), each "-" when unset. Domains that are
// neither shut down nor dying are left out.
func parseList(out string) map[uint32]domainState {
	states := map[uint32]domainState{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 6 || len(f[4]) != 6 {
			continue
		}
		id, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil {
			continue
		}
		switch st := f[4]; {
		case st[3] == 's' && st[4] == 's':
			states[uint32(id)] = domainSuspended
		case st[3] == 's' || st[4] == 'c':
			states[uint32(id)] = domainEnded
		}
	}
	return states
}

func (v *VM) suspendedSince() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.suspendedAt
}

func (v *VM) setSuspendedSince(t time.Time) {
	v.mu.Lock()
	v.suspendedAt = t
	v.mu.Unlock()
}

func (b *Backend) watch(v *VM) {
	b.mu.Lock()
	b.vms[v] = struct{}{}
	if v.mac != "" {
		b.macs[v.mac] = v.id
	}
	b.mu.Unlock()
}

// unwatch forgets an ended VM, and frees its MAC.
func (b *Backend) unwatch(v *VM) {
	b.mu.Lock()
	delete(b.vms, v)
	b.mu.Unlock()
	b.releaseMAC(v.mac, v.id)
}
