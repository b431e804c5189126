// Package xenchan is a reliable, ordered byte stream between sfld in dom0
// and the in-guest agent of one Xen domU, carried in xenstore nodes.
//
// # Layout
//
// Everything lives in the guest's own subtree, D/data/snowflock, where D
// is the guest's home /local/domain/<domid> (the guest names it by the
// relative path "data/snowflock"):
//
//	g2h/<seq>   chunks the guest wrote, for sfld
//	h2g/<seq>   chunks sfld wrote, for the guest
//
// <seq> is a decimal sequence number zero-padded to 16 digits, and a
// chunk's value is up to ChunkSize raw bytes of the stream.
//
// # Security boundary
//
// A guest may write only its own subtree (xenstored's permissions; the
// guest owns its data/ directory, and nodes it creates there are its own),
// so sfld knows which domain bytes came from by the path alone: whatever
// it reads under /local/domain/<domid>/data/snowflock/g2h was written by
// domain <domid> or by dom0. (A guest can grant other domains access to
// its own nodes; what they then write is the guest's responsibility, as
// if it had forwarded it.) The chunks sfld writes into h2g must stay
// readable and removable by the guest: Host makes the guest the owner of
// the directories, and checks who owns the first chunk it writes. Under
// C xenstored a node dom0 creates inherits its parent's owner, so the
// guest owns sfld's chunks; if another xenstored makes dom0 their owner,
// the Conn gives each chunk to the guest with SET_PERMS (the guest's
// reader treats EACCES on a chunk as "not ready yet").
//
// # Writer
//
// Write cuts its bytes into chunks and writes each with one WRITE (which
// xenstored applies atomically) at the next seq. At open the writer
// continues after the highest seq present in its direction, so a
// restarted writer never uses a name lower than an unread chunk's. A seq
// whose WRITE failed is never reused (the chunk may have landed). Flow
// control: when Window of its chunks are unread, Write watches the
// directory until the reader has taken at least half of them, bounded by
// its context and by Close, so neither side ever buffers more than a
// window.
//
// # Reader
//
// A goroutine watches its direction's directory and, on every event and
// every PollInterval (events are hints: xenstored coalesces them, drops
// those of a domain that is slow to read them, and a guest's watches are
// re-registered by Linux only when it resumes from save or migration),
// lists it, then reads the chunks in seq order and removes each after
// reading it, handing the bytes to Read. It keeps at most 64 KiB read
// ahead; beyond that chunks stay in xenstore and hold the writer back.
// The reader remembers nothing across restarts: order comes from the
// names, which only grow while any chunk is unread.
//
// # What is not guaranteed
//
// Exactly-once delivery across failures: chunks that were read from
// xenstore but not yet returned by Read are lost when the Conn is closed
// or its process dies, a reader that dies between READ and RM of a chunk
// delivers it again after a restart, and the chunk of a failed Write may
// or may not have been written. The guest API's frames (egosf/guestproto)
// carry a length and a checksum, and their reader resyncs after garbage.
// Save/restore and cloning give the guest a new domain (and domid) whose
// subtree starts empty: unread chunks of the old domain stay with it. The
// guest's Conn goes on (its relative paths now name the new domain);
// sfld opens a new Host Conn for the new domid. One Conn per domain and
// side at a time: two readers of one direction would split the stream.
//
// # Limits
//
// xenstored caps a payload at 4096 bytes (the Linux xenbus device at
// 4080 with the header), C xenstored caps a node a guest writes at 2048
// bytes including its header, permissions and child names (quota
// "node size"), and oxenstored a value at 2048 bytes. Hence the defaults:
// chunks of 1920 bytes, and a window of 64 chunks, whose 17-byte names
// keep the directory node under the quota. C xenstored also rate-limits
// each domain's writes (about 200 a second past a burst): each guest
// chunk costs the guest one WRITE, and each chunk it receives one RM.
package xenchan

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/snowflock/snowflock/internal/xenstore"
)

// Dir is the channel's directory, relative to the guest's home.
const Dir = "data/snowflock"

// Directions: the subdirectories of Dir.
const (
	ToHost  = "g2h" // written by the guest, read by sfld
	ToGuest = "h2g" // written by sfld, read by the guest
)

// Defaults; see the package documentation for why.
const (
	DefaultChunkSize    = 1920
	DefaultWindow       = 64
	DefaultPollInterval = time.Second
)

// MaxChunkSize caps WithChunkSize: the largest value that fits in a WRITE
// on the xenbus device beside the longest chunk path. Chunks over 2000
// bytes or so exceed C xenstored's default node-size quota for guests.
const MaxChunkSize = 3968

// maxWindow caps WithWindow. Windows over about 100 make the directory
// node of a guest's chunks exceed C xenstored's node-size quota.
const maxWindow = 1024

const (
	seqDigits     = 16
	readAhead     = 64 << 10
	unwatchBudget = 5 * time.Second
)

// ErrClosed is returned by a Conn's methods after Close.
var ErrClosed = errors.New("xenchan: closed")

type config struct {
	chunk  int
	window int
	poll   time.Duration
}

// Option changes a Conn's defaults.
type Option func(*config)

// WithChunkSize sets the largest chunk a writer makes (1..MaxChunkSize).
func WithChunkSize(n int) Option { return func(c *config) { c.chunk = n } }

// WithWindow sets how many unread chunks a writer leaves before it waits.
func WithWindow(n int) Option { return func(c *config) { c.window = n } }

// WithPollInterval sets how often the reader lists its directory without
// a watch event.
func WithPollInterval(d time.Duration) Option { return func(c *config) { c.poll = d } }

// Conn is one side of a channel. Read, Write and Close may be called
// concurrently; concurrent Writes are serialised, each one's bytes kept
// together.
type Conn struct {
	xs    *xenstore.Client
	rdir  string // the direction this side reads
	wdir  string // the direction this side writes
	host  bool
	domid uint32 // Host: the guest, who must own sfld's chunks
	cfg   config
	token string

	ctx      context.Context // ends at Close
	cancel   context.CancelCauseFunc
	loopDone chan struct{}
	space    chan struct{} // Read made room in buf

	mu     sync.Mutex // guards the fields below; cond waits on it
	cond   *sync.Cond
	buf    bytes.Buffer
	rerr   error // why the reader stopped
	closed bool

	wmu       sync.Mutex // serialises Writes; guards the fields below
	next      uint64     // seq of the next chunk
	pending   int        // unread chunks as last counted, plus those written since
	permsDone bool       // Host: checked who owns a chunk sfld wrote
	permsEach bool       // Host: chunks need SET_PERMS to be the guest's
	watches   int        // writer watches made, for their tokens
}

// Host opens sfld's side of the channel of domain domid over xs (dom0's
// connection): it reads g2h and writes h2g under
// /local/domain/<domid>/data/snowflock, creating the directories if
// needed and making the guest their owner.
func Host(ctx context.Context, xs *xenstore.Client, domid uint32, opts ...Option) (*Conn, error) {
	if domid == 0 {
		return nil, fmt.Errorf("xenchan: dom0 has no guest channel: %w", fs.ErrInvalid)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	// dom0 may create anything anywhere: make sure the domain is there
	// before making its channel.
	home := fmt.Sprintf("/local/domain/%d", domid)
	if _, err = xs.GetPerms(ctx, home); err != nil {
		return nil, fmt.Errorf("xenchan: domain %d: %w", domid, err)
	}
	base := home + "/" + Dir
	for _, d := range []string{ToHost, ToGuest} {
		if err := xs.Mkdir(ctx, base+"/"+d); err != nil {
			return nil, fmt.Errorf("xenchan: %w", err)
		}
	}
	for _, p := range []string{base, base + "/" + ToHost, base + "/" + ToGuest} {
		if _, err := giveToGuest(ctx, xs, p, domid); err != nil {
			return nil, fmt.Errorf("xenchan: %w", err)
		}
	}
	return open(ctx, xs, base+"/"+ToHost, base+"/"+ToGuest, true, domid, cfg)
}

// Guest opens the agent's side of the channel over xs (the guest's
// connection, normally the xenbus device): it reads h2g and writes g2h
// under the relative path data/snowflock.
func Guest(ctx context.Context, xs *xenstore.Client, opts ...Option) (*Conn, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{ToHost, ToGuest} {
		if err := xs.Mkdir(ctx, Dir+"/"+d); err != nil {
			return nil, fmt.Errorf("xenchan: %w", err)
		}
	}
	return open(ctx, xs, Dir+"/"+ToGuest, Dir+"/"+ToHost, false, 0, cfg)
}

// Reset removes the chunks sfld wrote for domain domid that the guest has
// not read (the whole h2g directory), for when the VM is (re)started and
// they are stale. Call it before Host.
func Reset(ctx context.Context, xs *xenstore.Client, domid uint32) error {
	err := xs.Remove(ctx, fmt.Sprintf("/local/domain/%d/%s/%s", domid, Dir, ToGuest))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("xenchan: reset: %w", err)
	}
	return nil
}

// giveToGuest makes domid the owner of the node at path (with no access
// for other domains) unless it is already; it reports whether it had to.
func giveToGuest(ctx context.Context, xs *xenstore.Client, path string, domid uint32) (bool, error) {
	perms, err := xs.GetPerms(ctx, path)
	if err != nil {
		return false, err
	}
	if perms[0].Domid == domid {
		return false, nil
	}
	return true, xs.SetPerms(ctx, path, xenstore.Perm{Domid: domid, Access: xenstore.AccessNone})
}

func newConfig(opts []Option) (config, error) {
	cfg := config{chunk: DefaultChunkSize, window: DefaultWindow, poll: DefaultPollInterval}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.chunk < 1 || cfg.chunk > MaxChunkSize:
		return cfg, fmt.Errorf("xenchan: chunk size %d outside 1..%d: %w", cfg.chunk, MaxChunkSize, fs.ErrInvalid)
	case cfg.window < 1 || cfg.window > maxWindow:
		return cfg, fmt.Errorf("xenchan: window %d outside 1..%d: %w", cfg.window, maxWindow, fs.ErrInvalid)
	case cfg.poll <= 0:
		return cfg, fmt.Errorf("xenchan: poll interval %v: %w", cfg.poll, fs.ErrInvalid)
	}
	return cfg, nil
}

func open(ctx context.Context, xs *xenstore.Client, rdir, wdir string, host bool, domid uint32, cfg config) (*Conn, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	c := &Conn{
		xs: xs, rdir: rdir, wdir: wdir, host: host, domid: domid, cfg: cfg,
		token:    "xenchan-" + hex.EncodeToString(rnd[:]),
		loopDone: make(chan struct{}),
		space:    make(chan struct{}, 1),
	}
	c.cond = sync.NewCond(&c.mu)
	chunks, err := list(ctx, xs, wdir)
	if err != nil {
		return nil, fmt.Errorf("xenchan: %w", err)
	}
	c.next = 1
	if len(chunks) > 0 {
		c.next = chunks[len(chunks)-1].seq + 1
	}
	c.pending = len(chunks)
	w, err := xs.Watch(ctx, rdir, c.token)
	if err != nil {
		return nil, fmt.Errorf("xenchan: %w", err)
	}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	go c.readLoop(w)
	return c, nil
}

// chunk is a chunk's node name and its seq.
type chunk struct {
	seq  uint64
	name string
}

// parseSeq parses a chunk's node name: 1 to 20 decimal digits that fit a
// uint64. Other names (which a guest may put in its own directories) are
// not chunks.
func parseSeq(name string) (uint64, bool) {
	if len(name) == 0 || len(name) > 20 {
		return 0, false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < '0' || name[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(name, 10, 64)
	return v, err == nil
}

func seqName(seq uint64) string { return fmt.Sprintf("%0*d", seqDigits, seq) }

// list returns the chunks in dir in seq order; a missing dir is empty.
func list(ctx context.Context, xs *xenstore.Client, dir string) ([]chunk, error) {
	names, err := xs.Directory(ctx, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var chunks []chunk
	for _, n := range names {
		if seq, ok := parseSeq(n); ok {
			chunks = append(chunks, chunk{seq, n})
		}
	}
	slices.SortFunc(chunks, func(a, b chunk) int {
		return cmp.Or(cmp.Compare(a.seq, b.seq), cmp.Compare(a.name, b.name))
	})
	return chunks, nil
}

// transient reports whether a failed xenstore call is worth retrying at
// the next event or poll: EACCES (a chunk whose permissions sfld has not
// set yet), EAGAIN/EBUSY and ENOSPC.
func transient(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, xenstore.ErrRetry) || errors.Is(err, xenstore.ErrQuota)
}

// readLoop moves chunks from xenstore to buf until Close or a fatal error.
func (c *Conn) readLoop(w *xenstore.Watch) {
	defer close(c.loopDone)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), unwatchBudget)
		defer cancel()
		w.Unwatch(ctx)
	}()
	tick := time.NewTicker(c.cfg.poll)
	defer tick.Stop()
	events := w.Events()
	unremoved := map[uint64]bool{}
	for {
		progressed, err := c.drain(events, unremoved)
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			c.mu.Lock()
			c.rerr = fmt.Errorf("xenchan: read %s: %w", c.rdir, err)
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		if progressed {
			continue // more may have come meanwhile
		}
		select {
		case <-c.ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil // the connection is down: the next call says so
			}
		case <-tick.C:
		}
	}
}

// drain lists the read directory once and moves its chunks to buf in seq
// order. It reports whether it moved any; a transient error ends the pass
// quietly (the next event or poll retries it).
func (c *Conn) drain(events <-chan xenstore.Event, unremoved map[uint64]bool) (bool, error) {
	// Every event so far is answered by the listing below.
	for pending := true; pending; {
		select {
		case _, ok := <-events:
			pending = ok
		default:
			pending = false
		}
	}
	chunks, err := list(c.ctx, c.xs, c.rdir)
	if err != nil {
		return false, c.fatal(err)
	}
	present := map[uint64]bool{}
	for _, ch := range chunks {
		present[ch.seq] = true
	}
	for seq := range unremoved {
		if !present[seq] {
			delete(unremoved, seq)
		}
	}
	progressed := false
	for _, ch := range chunks {
		path := c.rdir + "/" + ch.name
		if unremoved[ch.seq] { // delivered already; its RM failed
			err := c.xs.Remove(c.ctx, path)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				delete(unremoved, ch.seq)
			} else if err := c.fatal(err); err != nil {
				return progressed, err
			}
			continue
		}
		if err := c.waitSpace(); err != nil {
			return progressed, err
		}
		val, err := c.xs.Read(c.ctx, path)
		if errors.Is(err, fs.ErrNotExist) {
			// Listed but not readable: xenstored may hide a node the
			// caller may not read yet as absent. Skipping it would lose
			// bytes; end the pass, the next listing tells (a chunk Reset
			// removed is no longer listed).
			return progressed, nil
		}
		if err != nil {
			return progressed, c.fatal(err) // a transient error stops the pass: order
		}
		rmErr := c.xs.Remove(c.ctx, path)
		if rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			if err := c.fatal(rmErr); err != nil {
				c.deliver(val)
				return true, err
			}
			unremoved[ch.seq] = true
		}
		c.deliver(val)
		progressed = true
	}
	return progressed, nil
}

// fatal returns err unless it is transient.
func (c *Conn) fatal(err error) error {
	if transient(err) {
		return nil
	}
	return err
}

// waitSpace waits until buf has room for another chunk.
func (c *Conn) waitSpace() error {
	for {
		c.mu.Lock()
		n := c.buf.Len()
		c.mu.Unlock()
		if n < readAhead {
			return nil
		}
		select {
		case <-c.space:
		case <-c.ctx.Done():
			return context.Cause(c.ctx)
		}
	}
}

func (c *Conn) deliver(b []byte) {
	c.mu.Lock()
	c.buf.Write(b)
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Read reads the stream: it blocks until bytes arrive, the reader fails
// (after the bytes read before the failure) or the Conn is closed
// (ErrClosed, even if bytes were waiting).
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closed:
			return 0, ErrClosed
		case c.buf.Len() > 0:
			n, _ := c.buf.Read(p)
			select {
			case c.space <- struct{}{}:
			default:
			}
			return n, nil
		case c.rerr != nil:
			return 0, c.rerr
		case len(p) == 0:
			return 0, nil
		}
		c.cond.Wait()
	}
}

// Write writes p to the stream; see WriteContext. It waits for the reader
// as long as needed, until Close.
func (c *Conn) Write(p []byte) (int, error) {
	return c.WriteContext(context.Background(), p)
}

// WriteContext writes p as chunks. It returns once every chunk is in
// xenstore, or with the number of bytes of the chunks written before an
// error: ctx ended, Close, or a xenstore failure (after which the chunk
// being written may or may not have landed).
func (c *Conn) WriteContext(ctx context.Context, p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ctx.Err() != nil {
		return 0, ErrClosed
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	defer stop()
	written := 0
	for len(p) > 0 {
		if err := c.waitWindow(ctx); err != nil {
			return written, fmt.Errorf("xenchan: write %s: %w", c.wdir, err)
		}
		n := min(len(p), c.cfg.chunk)
		if err := c.writeChunk(ctx, p[:n]); err != nil {
			return written, fmt.Errorf("xenchan: write %s: %w", c.wdir, err)
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// writeChunk writes b as the next chunk.
func (c *Conn) writeChunk(ctx context.Context, b []byte) error {
	if c.next == math.MaxUint64 {
		return fmt.Errorf("sequence numbers exhausted (a chunk named %d is present): %w", uint64(math.MaxUint64-1), xenstore.ErrQuota)
	}
	path := c.wdir + "/" + seqName(c.next)
	c.next++ // even if the WRITE fails: it may have landed
	if err := c.xs.Write(ctx, path, b); err != nil {
		return err
	}
	c.pending++
	if !c.host || (c.permsDone && !c.permsEach) {
		return nil
	}
	if !c.permsDone {
		set, err := giveToGuest(ctx, c.xs, path, c.domid)
		if errors.Is(err, fs.ErrNotExist) {
			// The guest has read and removed it already: it may.
			set, err = false, nil
		}
		if err != nil {
			return err
		}
		c.permsDone, c.permsEach = true, set
		return nil
	}
	err := c.xs.SetPerms(ctx, path, xenstore.Perm{Domid: c.domid, Access: xenstore.AccessNone})
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed meanwhile (Reset): nothing to give
	}
	return err
}

// waitWindow returns when fewer than Window chunks are unread: at once if
// the count says so, else after watching the directory until the reader
// has taken at least half of them.
func (c *Conn) waitWindow(ctx context.Context) error {
	if c.pending < c.cfg.window {
		return nil
	}
	chunks, err := list(ctx, c.xs, c.wdir)
	if err != nil {
		return err
	}
	if c.pending = len(chunks); c.pending < c.cfg.window {
		return nil
	}
	c.watches++
	w, err := c.xs.Watch(ctx, c.wdir, fmt.Sprintf("%s-w%d", c.token, c.watches))
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unwatchBudget)
		defer cancel()
		w.Unwatch(ctx)
	}()
	tick := time.NewTicker(c.cfg.poll)
	defer tick.Stop()
	for {
		select {
		case _, ok := <-w.Events(): // the first comes right away
			if !ok {
				if err := w.Err(); err != nil {
					return err
				}
				return xenstore.ErrClosed
			}
		case <-tick.C:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		chunks, err := list(ctx, c.xs, c.wdir)
		if err != nil {
			if transient(err) {
				continue
			}
			return err
		}
		if c.pending = len(chunks); c.pending <= c.cfg.window/2 {
			return nil
		}
	}
}

// Close stops the reader and removes its watch, and ends a blocked Write.
// It deletes nothing: the chunks not yet read stay for the next Conn of
// this side. Bytes read from xenstore but not yet by Read are lost. The
// xenstore client stays open.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	c.cancel(ErrClosed)
	<-c.loopDone
	return nil
}
