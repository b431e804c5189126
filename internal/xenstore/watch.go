package xenstore

import (
	"context"
	"fmt"
	"io/fs"
	"sync/atomic"
	"time"
)

// Special watch paths: events xenstored invents rather than node changes.
const (
	// IntroduceDomain fires when a domain is introduced to xenstored.
	IntroduceDomain = "@introduceDomain"
	// ReleaseDomain fires when a domain crashes, shuts down, is released
	// or destroyed.
	ReleaseDomain = "@releaseDomain"
)

// watchQueue is the number of events a Watch holds for its reader.
const watchQueue = 128

// unwatchTimeout bounds Watch.Close.
const unwatchTimeout = 10 * time.Second

// Event is one WATCH_EVENT: the path that changed (relative if the watch's
// path was) and the watch's token.
type Event struct {
	Path  string
	Token string
}

// Watch is a registered watch. Its events are hints, not a log: xenstored
// fires once right after WATCH, may fire spuriously, coalesces identical
// pending events and drops events for domains that do not read them; and
// when the reader of Events falls behind the oldest queued event is
// dropped (Dropped counts them). Re-read the state on each event.
type Watch struct {
	c     *Client
	path  string
	token string
	ch    chan Event

	dropped atomic.Uint64
	err     error // set (under c.mu) when ch is closed
}

// Watch asks xenstored to report changes to path and everything below it
// (or to a special path: IntroduceDomain, ReleaseDomain) with token, which
// must be unique among the client's watches. The first event, for path
// itself, comes right away.
func (c *Client) Watch(ctx context.Context, path, token string) (*Watch, error) {
	if err := checkPath(XS_WATCH, path, true); err != nil {
		return nil, err
	}
	if err := checkToken(token); err != nil {
		return nil, err
	}
	w := &Watch{c: c, path: path, token: token, ch: make(chan Event, watchQueue)}
	c.mu.Lock()
	switch {
	case c.err != nil:
		c.mu.Unlock()
		return nil, fmt.Errorf("xenstore WATCH %s: %w", path, c.err)
	case c.watches[token] != nil:
		c.mu.Unlock()
		return nil, fmt.Errorf("xenstore WATCH %s: token %q is in use: %w", path, token, fs.ErrExist)
	}
	// Registered before sending: on the xenbus device the first event can
	// come before the reply.
	c.watches[token] = w
	c.mu.Unlock()
	payload := cstrings(path, token)
	if _, err := c.call(ctx, XS_WATCH, 0, path, payload); err != nil {
		c.dropWatch(w, err)
		if ctx.Err() != nil {
			// The WATCH may have gone out: take it back, after it in the
			// queue. A harmless ENOENT if it never went.
			c.post(XS_UNWATCH, payload)
		}
		return nil, err
	}
	return w, nil
}

func checkToken(token string) error {
	if token == "" {
		return fmt.Errorf("xenstore WATCH: empty token: %w", fs.ErrInvalid)
	}
	for i := 0; i < len(token); i++ {
		if token[i] == 0 {
			return fmt.Errorf("xenstore WATCH: token %q has a NUL: %w", token, fs.ErrInvalid)
		}
	}
	return nil
}

// dispatchEvent hands a WATCH_EVENT to its watch without blocking.
func (c *Client) dispatchEvent(payload []byte) {
	path, token, err := parseWatchEvent(payload)
	if err != nil {
		return // nothing to route it by
	}
	ev := Event{Path: path, Token: token}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.watches[token]
	if w == nil {
		return // unwatched meanwhile
	}
	select {
	case w.ch <- ev:
	default:
		// Full: drop the oldest. Only this goroutine sends, under c.mu,
		// so there is room after the receive.
		select {
		case <-w.ch:
		default:
		}
		w.ch <- ev
		w.dropped.Add(1)
	}
}

// dropWatch forgets w and closes its channel, once.
func (c *Client) dropWatch(w *Watch, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watches[w.token] == w {
		delete(c.watches, w.token)
		w.err = err
		close(w.ch)
	}
}

// Events returns the watch's events. It is closed after Close, or when
// the connection goes down.
func (w *Watch) Events() <-chan Event { return w.ch }

// Path returns the watched path.
func (w *Watch) Path() string { return w.path }

// Token returns the watch's token.
func (w *Watch) Token() string { return w.token }

// Dropped returns how many events were dropped because Events was not
// read fast enough.
func (w *Watch) Dropped() uint64 { return w.dropped.Load() }

// Err returns why Events was closed: nil while the watch is active or
// after Close, otherwise the connection's error.
func (w *Watch) Err() error {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if w.err == errUnwatched {
		return nil
	}
	return w.err
}

var errUnwatched = fmt.Errorf("xenstore: unwatched")

// Unwatch removes the watch (UNWATCH) and closes Events. The watch is
// forgotten locally even if the request fails.
func (w *Watch) Unwatch(ctx context.Context) error {
	w.c.mu.Lock()
	active := w.c.watches[w.token] == w
	w.c.mu.Unlock()
	if !active {
		return nil
	}
	_, err := w.c.call(ctx, XS_UNWATCH, 0, w.path, cstrings(w.path, w.token))
	w.c.dropWatch(w, errUnwatched)
	return err
}

// Close is Unwatch bounded by a timeout of its own.
func (w *Watch) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), unwatchTimeout)
	defer cancel()
	return w.Unwatch(ctx)
}
