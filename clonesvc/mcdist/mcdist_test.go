package mcdist

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// oneCopy is the server's bytes for sending pages [0, n) of f once.
func oneCopy(f *family, n uint64, maxDatagram int) uint64 {
	frags := fragmentCount(maxDatagram)
	var total uint64
	for p := range n {
		if isZeroPage(f.zero, p) {
			total += Overhead + 4 + 2 + 8
		} else {
			total += uint64(frags*(Overhead+fragmentHeader) + PageSize)
		}
	}
	return total
}

// One client fetches 200 pages; the two others store them all without
// asking, and the server sends about one copy.
func TestMulticastFillsEveryStore(t *testing.T) {
	b := newBed(t, 4)
	f := newFamily(256, 16)
	srv, _ := startServer(t, b, 0, f.serverConfig(b, 0))
	stores := []*memStore{newMemStore(), newMemStore(), newMemStore()}
	var clients []*Client
	for i, st := range stores {
		clients = append(clients, startClient(t, b, i+1, f.clientConfig(b, 0, st)))
	}
	const n = 200
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fetchAll(ctx, clients[0], n, 8); err != nil {
		t.Fatal(err)
	}
	for i, st := range stores {
		if !eventually(5*time.Second, func() bool { return st.len() >= n }) {
			t.Fatalf("client %d stored %d of %d pages", i, st.len(), n)
		}
		checkPages(t, f, st, n)
	}
	for i, c := range clients[1:] {
		if s := c.Stats(); s.PagesRequested != 0 || s.PagesUnrequested != n {
			t.Errorf("listener %d: requested %d pages, stored %d unasked; want 0 and %d", i+1, s.PagesRequested, s.PagesUnrequested, n)
		}
	}
	s := srv.Stats()
	want := oneCopy(f, n, DefaultMaxDatagram)
	t.Logf("server: %+v; one copy is %d bytes", s, want)
	// Each page goes out once, or again only for the asking client's retry
	// (a 20 ms timeout can pass on a loaded machine, under -race).
	if s.PagesMulticast != s.PagesServed || s.PagesServed < n || s.PagesServed > n+s.Retries {
		t.Errorf("served %d pages (%d multicast) after %d retries, want %d and no more than the retries", s.PagesServed, s.PagesMulticast, s.Retries, n)
	}
	if s.BytesSent < want || float64(s.BytesSent) > 1.2*float64(want) {
		t.Errorf("server sent %d bytes, want about one copy (%d), not one per host", s.BytesSent, want)
	}
}

// Three clients fetching the same pages at once are served once per page.
func TestConcurrentFetchesServedOnce(t *testing.T) {
	b := newBed(t, 4)
	f := newFamily(64, 0)
	cfg := f.serverConfig(b, 0)
	// Concurrent means within the window: on a loaded 2-core test machine
	// a client's request may leave tens of milliseconds after it hears the
	// page, so the window is widened well past those delays.
	cfg.DupWindow = 250 * time.Millisecond
	srv, _ := startServer(t, b, 0, cfg)
	var clients []*Client
	var stores []*memStore
	for i := range 3 {
		st := newMemStore()
		stores = append(stores, st)
		clients = append(clients, startClient(t, b, i+1, f.clientConfig(b, 0, st)))
	}
	const n = 50
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for _, c := range clients {
		for p := range uint64(n) {
			wg.Go(func() { <-start; errs <- c.Fetch(ctx, p) })
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range stores {
		checkPages(t, f, st, n)
	}
	s := srv.Stats()
	t.Logf("server: %+v", s)
	if s.PagesServed != n {
		t.Errorf("served %d pages, want each of the %d once", s.PagesServed, n)
	}
	if s.DuplicatesSuppressed == 0 || s.DuplicatesSuppressed != s.PagesRequested-n {
		t.Errorf("%d of %d requested pages suppressed, want all but the %d served", s.DuplicatesSuppressed, s.PagesRequested, n)
	}
}

// With 10% loss both ways on a client's link, every fetch completes with
// the right bytes (through retries), and the server slows down for it.
func TestLossyLinkStillCompletes(t *testing.T) {
	b := newBed(t, 3)
	b.lossy(2, 10)
	f := newFamily(256, 32)
	srv, _ := startServer(t, b, 0, f.serverConfig(b, 0))
	good, lossy := newMemStore(), newMemStore()
	startClient(t, b, 1, f.clientConfig(b, 0, good))
	c := startClient(t, b, 2, f.clientConfig(b, 0, lossy))
	const n = 200
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := fetchAll(ctx, c, n, 8); err != nil {
		t.Fatal(err)
	}
	rate := srv.Stats().RateLimit
	checkPages(t, f, lossy, n)
	if !eventually(5*time.Second, func() bool { return good.len() >= n }) {
		t.Fatalf("the loss-free host stored %d of %d pages", good.len(), n)
	}
	checkPages(t, f, good, n)
	cs, s := c.Stats(), srv.Stats()
	t.Logf("lossy client: %+v\nserver: %+v", cs, s)
	if cs.Retries == 0 {
		t.Error("no retries: the link lost nothing?")
	}
	if s.Reports == 0 || rate >= DefaultMaxRate {
		t.Errorf("after %d reports the rate limit is %d, want it held below %d by the lossy receiver", s.Reports, rate, DefaultMaxRate)
	}
}

// With the server gone, Fetch fails within FetchBound with
// ErrUnavailable (clonesvc.ErrUnavailable is errdefs.ErrUnavailable).
func TestServerGoneFetchFails(t *testing.T) {
	b := newBed(t, 2)
	f := newFamily(16, 0)
	_, stop := startServer(t, b, 0, f.serverConfig(b, 0))
	st := newMemStore()
	cfg := f.clientConfig(b, 0, st)
	cfg.FetchBound = 300 * time.Millisecond
	c := startClient(t, b, 1, cfg)
	ctx := context.Background()
	if err := c.Fetch(ctx, 1); err != nil {
		t.Fatal(err)
	}
	stop()
	start := time.Now()
	err := c.Fetch(ctx, 2)
	took := time.Since(start)
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Fetch with the server gone: %v, want ErrUnavailable", err)
	}
	if took < cfg.FetchBound || took > cfg.FetchBound+200*time.Millisecond {
		t.Errorf("Fetch failed after %v, want just after the %v bound", took, cfg.FetchBound)
	}
	if s := c.Stats(); s.FetchesFailed != 1 || s.Retries == 0 {
		t.Errorf("stats %+v: want one failed fetch after retries", s)
	}
	if got, _ := st.get(1); !bytes.Equal(got, f.page(1)) {
		t.Error("page 1 differs from the image")
	}
}

// A host that joins late gets pages already multicast UnicastAfter times
// by unicast: the others hear nothing again.
func TestLateJoinerServedByUnicast(t *testing.T) {
	b := newBed(t, 3)
	f := newFamily(32, 0)
	cfg := f.serverConfig(b, 0)
	cfg.UnicastAfter = 1
	srv, _ := startServer(t, b, 0, cfg)
	early, late := newMemStore(), newMemStore()
	// No retries wanted here (a retry of a multicast page goes unicast too):
	// a timeout far above any scheduling delay.
	ecfg, lcfg := f.clientConfig(b, 0, early), f.clientConfig(b, 0, late)
	ecfg.Timeout, lcfg.Timeout = time.Second, time.Second
	ce := startClient(t, b, 1, ecfg)
	ctx := context.Background()
	if err := fetchAll(ctx, ce, 8, 1); err != nil {
		t.Fatal(err)
	}
	cl := startClient(t, b, 2, lcfg)
	if err := fetchAll(ctx, cl, 8, 1); err != nil {
		t.Fatal(err)
	}
	checkPages(t, f, late, 8)
	// The server counts a page once its last packet left: wait for that.
	eventually(time.Second, func() bool { return srv.Stats().PagesUnicast >= 8 })
	s, es, ls := srv.Stats(), ce.Stats(), cl.Stats()
	if s.PagesMulticast != 8 || s.PagesUnicast != 8 || ls.PagesUnicast != 8 {
		t.Errorf("server multicast %d and unicast %d pages, late host got %d by unicast; want 8 each", s.PagesMulticast, s.PagesUnicast, ls.PagesUnicast)
	}
	if es.DuplicatePages != 0 || es.PacketsReceived != 8*uint64(fragmentCount(DefaultMaxDatagram)) {
		t.Errorf("the early host heard %d packets and %d duplicate pages after its own fetches", es.PacketsReceived, es.DuplicatePages)
	}
}

// A server given an open socket (ServerConfig.Conn: a port the kernel
// picked) serves on that socket: the port never goes back to the kernel,
// where another socket of the host could take it before the server binds.
func TestServeOnGivenSocket(t *testing.T) {
	b := newBed(t, 2)
	f := newFamily(16, 4)
	cfg := f.serverConfig(b, 0)
	var lis *net.UDPConn
	var err error
	b.inWait(0, func() { lis, err = net.ListenUDP("udp4", &net.UDPAddr{IP: b.hosts[0].addr.AsSlice()}) })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = netip.AddrPortFrom(b.hosts[0].addr, uint16(lis.LocalAddr().(*net.UDPAddr).Port))
	cfg.Conn = lis
	startServer(t, b, 0, cfg)
	st := newMemStore()
	ccfg := f.clientConfig(b, 0, st)
	ccfg.Server = cfg.Listen
	c := startClient(t, b, 1, ccfg)
	if err := c.Fetch(context.Background(), 2); err != nil {
		t.Fatalf("fetch from the server on its given socket %v: %v", cfg.Listen, err)
	}
	if got, _ := st.get(2); !bytes.Equal(got, f.page(2)) {
		t.Error("page 2 differs from the image")
	}
}
