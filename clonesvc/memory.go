package clonesvc

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/snowflock/snowflock/clonesvc/descriptor"
	"github.com/snowflock/snowflock/clonesvc/mcdist"
	"github.com/snowflock/snowflock/clonesvc/memtap"
)

// memoryServer serves one family's frozen memory to the hosts of its
// clones (the parent's host).
type memoryServer struct {
	srv    *mcdist.Server
	ep     MemoryEndpoint
	cancel context.CancelFunc
	done   chan struct{}
	image  *os.File
}

// familyGroup is family's multicast group: 239.77.X.Y from a hash of its
// ID (administratively scoped, RFC 2365), on the configured port.
func (s *Service) familyGroup(family string) netip.AddrPort {
	h := sha256.Sum256([]byte(family))
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{239, 77, h[0], h[1]}), uint16(s.cfg.MemoryGroupPort))
}

// serveFamily starts (once) the memory server of checkpoint cp's family
// and returns where it is reached.
func (s *Service) serveFamily(ctx context.Context, cp *CheckpointRecord) (MemoryEndpoint, error) {
	s.mu.Lock()
	if srv, ok := s.servers[cp.Family]; ok {
		s.mu.Unlock()
		return srv.ep, nil
	}
	s.mu.Unlock()
	host, _, err := net.SplitHostPort(s.cfg.Address)
	if err != nil {
		return MemoryEndpoint{}, fmt.Errorf("memory server: this host's address %q: %w", s.cfg.Address, ErrInvalidArgument)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return MemoryEndpoint{}, fmt.Errorf("memory server: this host's address %q is not an IP address: %w", host, ErrInvalidArgument)
	}
	if len(cp.Checkpoint.Memory) != 1 {
		return MemoryEndpoint{}, fmt.Errorf("memory server: %d memory regions, one supported: %w", len(cp.Checkpoint.Memory), ErrInvalidArgument)
	}
	region := cp.Checkpoint.Memory[0]
	image, err := os.Open(region.Path)
	if err != nil {
		return MemoryEndpoint{}, fmt.Errorf("memory server: %w", err)
	}
	var key descriptor.Key
	copy(key[:], cp.Key)
	// The port the family's server had before (an sfld restart), else an
	// ephemeral port of this host's address.
	want := 0
	if prev, err := netip.ParseAddrPort(cp.MemoryServer); err == nil {
		want = int(prev.Port())
	}
	lis, err := net.ListenUDP("udp4", &net.UDPAddr{IP: addr.AsSlice(), Port: want})
	if err != nil {
		image.Close()
		return MemoryEndpoint{}, fmt.Errorf("memory server: %w", err)
	}
	// The server serves on this very socket: the port the kernel picked
	// stays the family's (closing and binding again let another socket of
	// this host take it in between).
	port := lis.LocalAddr().(*net.UDPAddr).Port
	group := s.familyGroup(cp.Family)
	srv, err := mcdist.NewServer(mcdist.ServerConfig{
		FamilyID: cp.Family, Key: key, Image: image, Pages: region.Size / uint64(region.PageSize), Zero: region.Zero,
		Listen: netip.AddrPortFrom(addr, uint16(port)), Conn: lis, Group: group, Unicast: s.cfg.MemoryUnicast,
	})
	if err != nil {
		lis.Close()
		image.Close()
		return MemoryEndpoint{}, fmt.Errorf("memory server: %w", err)
	}
	sctx, cancel := context.WithCancel(s.ctx)
	ms := &memoryServer{
		srv:    srv,
		ep:     MemoryEndpoint{Server: netip.AddrPortFrom(addr, uint16(port)).String(), Group: group.String()},
		cancel: cancel, done: make(chan struct{}), image: image,
	}
	go func() {
		defer close(ms.done)
		if err := srv.Serve(sctx); err != nil && sctx.Err() == nil {
			s.log.Error().Str("family", cp.Family).Err(err).Msg("memory server stopped")
		}
	}()
	s.mu.Lock()
	s.servers[cp.Family] = ms
	s.mu.Unlock()
	if cp.MemoryServer != ms.ep.Server {
		cp.MemoryServer = ms.ep.Server
		s.store.put(bucketCheckpoints, cp.ID, cp)
	}
	s.log.Info().Str("family", cp.Family).Str("server", ms.ep.Server).Str("group", ms.ep.Group).Msg("memory server up")
	return ms.ep, nil
}

// stopServer stops family's memory server, if any.
func (s *Service) stopServer(family string) {
	s.mu.Lock()
	ms, ok := s.servers[family]
	delete(s.servers, family)
	s.mu.Unlock()
	if ok {
		ms.cancel()
		<-ms.done
		ms.image.Close()
	}
}

// familyTap is this host's view of another host's family: its descriptor,
// and its memory mounted through a tap filled by an mcdist client. Clones
// of the family on this host share it.
type familyTap struct {
	mu      sync.Mutex
	users   int
	tap     *memtap.Tap
	cancel  context.CancelFunc
	done    chan struct{}
	cp      *Checkpoint
	family  string
	dir     string
	lostErr error
}

func (f *familyTap) path() string { return f.tap.Path() }

// attachFamily returns (creating once) this host's tap of req's family
// and the checkpoint its clones restore from.
func (s *Service) attachFamily(ctx context.Context, req RemoteClones) (*familyTap, *Checkpoint, error) {
	s.mu.Lock()
	if ft, ok := s.taps[req.Family]; ok {
		ft.mu.Lock()
		ft.users += len(req.Clones)
		ft.mu.Unlock()
		s.mu.Unlock()
		return ft, ft.cp, nil
	}
	s.mu.Unlock()
	d, err := descriptor.Unmarshal(req.Descriptor)
	if err != nil {
		return nil, nil, fmt.Errorf("family %s: %w", req.Family, err)
	}
	if d.FamilyID != req.Family || len(d.Regions) != 1 {
		return nil, nil, fmt.Errorf("family %s: descriptor of family %s with %d regions: %w", req.Family, d.FamilyID, len(d.Regions), ErrInvalidArgument)
	}
	dir := s.familyDir(req.Family)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("family %s: %w", req.Family, err)
	}
	fail := func(err error) (*familyTap, *Checkpoint, error) {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("family %s: %w", req.Family, err)
	}
	statePath := filepath.Join(dir, "state")
	if err := os.WriteFile(statePath, d.DeviceState, 0o600); err != nil {
		return fail(err)
	}
	server, err := netip.ParseAddrPort(req.Memory.Server)
	if err != nil {
		return fail(fmt.Errorf("memory server %q: %w", req.Memory.Server, ErrInvalidArgument))
	}
	group, err := netip.ParseAddrPort(req.Memory.Group)
	if err != nil {
		return fail(fmt.Errorf("memory group %q: %w", req.Memory.Group, ErrInvalidArgument))
	}
	region := d.Regions[0]
	// The client stores what it hears in the tap, and the tap asks the
	// client for what it lacks: the store is bound once the tap exists.
	store := &boundStore{}
	client, err := mcdist.NewClient(mcdist.ClientConfig{
		FamilyID: d.FamilyID, Key: d.FamilyKey, Server: server, Group: group, Store: store, FetchBound: s.cfg.FetchTimeout,
	})
	if err != nil {
		return fail(err)
	}
	tap, err := memtap.Mount(ctx, memtap.Config{
		Dir: dir, Size: int64(region.Size), Zero: region.Zero, CachePath: filepath.Join(dir, "cache"),
		Fetcher: client, FetchTimeout: s.cfg.FetchTimeout,
	})
	if err != nil {
		return fail(err)
	}
	store.bind(tap)
	cctx, cancel := context.WithCancel(s.ctx)
	ft := &familyTap{
		users: len(req.Clones), tap: tap, cancel: cancel, done: make(chan struct{}), family: req.Family, dir: dir,
		cp: &Checkpoint{
			Backend: d.Backend, Machine: d.Machine, DeviceState: statePath,
			Memory: []MemoryImage{{Name: region.Name, Path: tap.Path(), Size: region.Size, PageSize: region.PageSize, Zero: region.Zero}},
		},
	}
	go func() {
		defer close(ft.done)
		if err := client.Run(cctx); err != nil && cctx.Err() == nil {
			s.log.Error().Str("family", req.Family).Err(err).Msg("memory client stopped")
		}
	}()
	s.goBackground(func() { s.watchTap(ft) })
	s.mu.Lock()
	s.taps[req.Family] = ft
	s.mu.Unlock()
	return ft, ft.cp, nil
}

// watchTap stops the family's clones here when its memory server is lost:
// a clone whose page cannot be fetched cannot run.
func (s *Service) watchTap(ft *familyTap) {
	select {
	case <-ft.tap.Lost():
	case <-ft.done:
		return
	case <-s.ctx.Done():
		return
	}
	reason := fmt.Sprintf("memory server lost: %v", ft.tap.Err())
	s.log.Error().Str("family", ft.family).Msg(reason)
	s.mu.Lock()
	var victims []*vmEntry
	for _, e := range s.vms {
		if e.rec.Family == ft.family && e.rec.ParentHost != "" {
			victims = append(victims, e)
		}
	}
	s.mu.Unlock()
	for _, e := range victims {
		s.removeVM(context.Background(), e, reason)
	}
}

// releaseTap drops one clone's use of family's tap; the last one unmounts
// it and removes the family's files.
func (s *Service) releaseTap(family string) {
	s.mu.Lock()
	ft, ok := s.taps[family]
	if !ok {
		s.mu.Unlock()
		return
	}
	ft.mu.Lock()
	ft.users--
	last := ft.users <= 0
	ft.mu.Unlock()
	if last {
		delete(s.taps, family)
	}
	s.mu.Unlock()
	if last {
		ft.cancel()
		<-ft.done
		if err := ft.tap.Close(); err != nil {
			s.log.Warn().Str("family", family).Err(err).Msg("unmount tap")
		}
		os.RemoveAll(ft.dir)
	}
}

// boundStore is the mcdist client's store: the family's tap, bound after
// the tap is mounted (the tap needs the client to exist first).
type boundStore struct {
	mu  sync.RWMutex
	tap *memtap.Tap
}

func (b *boundStore) bind(t *memtap.Tap) {
	b.mu.Lock()
	b.tap = t
	b.mu.Unlock()
}

func (b *boundStore) Have(page uint64) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.tap != nil && b.tap.Have(page)
}

func (b *boundStore) Put(page uint64, data []byte) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.tap == nil {
		return nil // heard before the tap existed: fetched again if needed
	}
	return b.tap.Put(page, data)
}
