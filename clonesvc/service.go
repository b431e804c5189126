package clonesvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/allocator"
)

// Config is what a Service runs with.
type Config struct {
	// Host is this host's name as the allocator knows it: slots on this
	// host are where local clones go.
	Host string
	// StateDir holds the record database, VM directories and checkpoints.
	StateDir string
	// Backend runs the VMs; Allocator grants clone slots.
	Backend   Backend
	Allocator allocator.Allocator
	// Lease is the allocation lease the service renews while it holds
	// slots (default 60 s): if sfld dies for good, its slots come back
	// after at most this long.
	Lease time.Duration
	// RequestTimeout bounds a guest's sf_request_ticket wait for slots
	// (default 30 s).
	RequestTimeout time.Duration
	// Defaults fills a StartVM spec's zero fields.
	Defaults VMSpec
	// Peers reaches other hosts' clone services; nil: clones stay on this
	// host (slots on other hosts are given back).
	Peers Peers
	// Address is this host's address as other hosts reach it (its daemon
	// API host:port); the memory server listens on its host part.
	Address string
	// MemoryGroupPort is the UDP port of the families' multicast groups
	// (default 7469); FetchTimeout bounds how long a clone's page fault
	// waits for a memory server that stopped answering (default 10 s).
	MemoryGroupPort int
	FetchTimeout    time.Duration
	// MemoryUnicast turns mcdist's multicast off: every page goes to the
	// host that asked alone (the baseline mcdist is measured against).
	MemoryUnicast bool
	Log           zerolog.Logger
	Version       string
}

// Service is the clone service of one host.
type Service struct {
	cfg   Config
	log   zerolog.Logger
	store *store

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	vms         map[string]*vmEntry
	tickets     map[string]*ticket
	checkpoints map[string]*CheckpointRecord
	// servers are the memory servers of this host's families with clones
	// elsewhere; taps the memory of other hosts' families with clones here.
	servers map[string]*memoryServer
	taps    map[string]*familyTap
}

// New opens the service's state under cfg.StateDir, reattaches to the VMs
// an earlier sfld left running (cleaning up those it cannot), and starts
// renewing the slots it holds.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Backend == nil || cfg.Allocator == nil {
		return nil, fmt.Errorf("clone service needs a backend and an allocator: %w", ErrInvalidArgument)
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("host name: %w", err)
		}
		cfg.Host = h
	}
	if cfg.Lease == 0 {
		cfg.Lease = 60 * time.Second
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.MemoryGroupPort == 0 {
		cfg.MemoryGroupPort = 7469
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = 10 * time.Second
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "vms"), filepath.Join(cfg.StateDir, "checkpoints")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	st, err := openStore(filepath.Join(cfg.StateDir, "sfld.db"))
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg: cfg, log: cfg.Log, store: st, ctx: sctx, cancel: cancel,
		vms: map[string]*vmEntry{}, tickets: map[string]*ticket{}, checkpoints: map[string]*CheckpointRecord{},
		servers: map[string]*memoryServer{}, taps: map[string]*familyTap{},
	}
	if err := s.recover(ctx); err != nil {
		cancel()
		st.close()
		return nil, err
	}
	s.wg.Add(1)
	go s.renewLoop()
	return s, nil
}

// Close stops serving and closes the record database. VMs keep running:
// the next sfld reattaches to them.
func (s *Service) Close() error {
	s.cancel()
	s.mu.Lock()
	for _, e := range s.vms {
		e.ch.close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return s.store.close()
}

// Info describes the service.
type Info struct {
	Version, Host, Backend, Allocator string
}

// Info returns the service's description.
func (s *Service) Info() Info {
	return Info{Version: s.cfg.Version, Host: s.cfg.Host, Backend: s.cfg.Backend.Name(), Allocator: s.cfg.Allocator.Info().Name}
}

// newID returns prefix + 8 random hex digits.
func newID(prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return prefix + hex.EncodeToString(b[:])
}

// randomBytes returns n bytes from crypto/rand.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return b
}

// go runs fn in the service's wait group.
func (s *Service) goBackground(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// errClosed is returned by calls made after Close.
var errClosed = fmt.Errorf("clone service is shutting down: %w", ErrUnavailable)

func (s *Service) closed() bool { return s.ctx.Err() != nil }

// isGone reports errors meaning the object no longer exists.
func isGone(err error) bool { return errors.Is(err, ErrNotFound) }
