package mcdist

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/snowflock/snowflock/clonesvc/descriptor"
)

// serverPort is where test servers listen, on their host's address.
const serverPort = 7600

// family is a test clone family: a random image with some zero pages.
type family struct {
	id    string
	key   descriptor.Key
	image []byte
	pages uint64
	zero  []byte
}

// newFamily makes an image of pages random pages; every zeroEvery-th page
// (if zeroEvery > 0) is zero and marked so.
func newFamily(pages uint64, zeroEvery uint64) *family {
	f := &family{id: fmt.Sprintf("family-%d", time.Now().UnixNano()), pages: pages, image: make([]byte, pages*PageSize), zero: make([]byte, (pages+7)/8)}
	_, _ = rand.Read(f.key[:])
	_, _ = rand.Read(f.image)
	for p := range pages {
		if zeroEvery > 0 && p%zeroEvery == zeroEvery-1 {
			clear(f.page(p))
			f.zero[p/8] |= 1 << (p % 8)
		}
	}
	return f
}

func (f *family) page(p uint64) []byte { return f.image[p*PageSize : (p+1)*PageSize] }

// serverConfig serves f from host i of b.
func (f *family) serverConfig(b *bed, i int) ServerConfig {
	return ServerConfig{
		FamilyID: f.id, Key: f.key, Image: bytes.NewReader(f.image), Pages: f.pages, Zero: f.zero,
		Listen: netip.AddrPortFrom(b.hosts[i].addr, serverPort), Group: testGroup, Interface: "eth0",
	}
}

// clientConfig fetches f from a server on host srv of b.
func (f *family) clientConfig(b *bed, srv int, store Store) ClientConfig {
	return ClientConfig{
		FamilyID: f.id, Key: f.key, Server: netip.AddrPortFrom(b.hosts[srv].addr, serverPort),
		Group: testGroup, Interface: "eth0", Store: store,
	}
}

// startServer serves cfg in host i until the test ends or stop is
// called.
func startServer(tb testing.TB, b *bed, i int, cfg ServerConfig) (s *Server, stop func()) {
	tb.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.in(i, func() {
		defer close(done)
		if err := s.Serve(ctx); err != nil {
			tb.Error(err)
		}
	})
	stop = sync.OnceFunc(func() { cancel(); <-done })
	tb.Cleanup(stop)
	select {
	case <-s.listening:
	case <-done:
		tb.Fatal("server stopped before listening")
	}
	return s, stop
}

// startClient runs a client on host i until the test ends.
func startClient(tb testing.TB, b *bed, i int, cfg ClientConfig) *Client {
	tb.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.in(i, func() {
		if err := c.Run(ctx); err != nil {
			tb.Error(err)
		}
	})
	tb.Cleanup(func() { cancel(); <-c.stopped })
	select {
	case <-c.ready:
	case <-c.stopped:
		tb.Fatal("client stopped before joining")
	}
	return c
}

// memStore is a Store in memory.
type memStore struct {
	mu    sync.Mutex
	pages map[uint64][]byte
}

func newMemStore() *memStore { return &memStore{pages: map[uint64][]byte{}} }

func (m *memStore) Have(p uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.pages[p]
	return ok
}

func (m *memStore) Put(p uint64, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pages[p] = bytes.Clone(data)
	return nil
}

func (m *memStore) get(p uint64) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.pages[p]
	return d, ok
}

func (m *memStore) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pages)
}

// checkPages fails unless store holds pages [0, n) of f byte for byte.
func checkPages(tb testing.TB, f *family, store *memStore, n uint64) {
	tb.Helper()
	for p := range n {
		got, ok := store.get(p)
		switch {
		case !ok:
			tb.Fatalf("page %d missing", p)
		case !bytes.Equal(got, f.page(p)):
			tb.Fatalf("page %d differs from the image", p)
		}
	}
}

// fetchAll fetches pages [0, n) with workers concurrent Fetch loops.
func fetchAll(ctx context.Context, c *Client, n uint64, workers int) error {
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			var err error
			for p := uint64(w); p < n && err == nil; p += uint64(workers) {
				err = c.Fetch(ctx, p)
			}
			errs <- err
		}()
	}
	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// eventually polls cond until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}
