package egosf_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestagent/agenttest"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

func openGuest(t *testing.T, handle agenttest.Handler) *egosf.Guest {
	t.Helper()
	h := agenttest.Start(t, handle)
	t.Setenv(egosf.GuestSocketEnv, h.Socket)
	g, err := egosf.OpenGuest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestGuestAPIThroughAgent(t *testing.T) {
	var f agenttest.Sfld
	g := openGuest(t, f.Handle)
	ctx := context.Background()
	tk, err := g.RequestTicket(ctx, 5)
	if err != nil || tk != (egosf.GuestTicket{ID: "t-1", Granted: 3}) {
		t.Fatalf("RequestTicket = %+v, %v", tk, err)
	}
	if id, err := g.Clone(ctx, tk.ID); err != nil || id != 0 {
		t.Errorf("Clone = %d, %v; want 0 in the parent", id, err)
	}
	if cp, id, err := g.CheckpointParent(ctx); err != nil || cp != "cp-1" || id != 0 {
		t.Errorf("CheckpointParent = %q, %d, %v", cp, id, err)
	}
	if n, err := g.CreateClones(ctx, "cp-1", tk.ID); err != nil || n != 2 {
		t.Errorf("CreateClones = %d, %v", n, err)
	}
	if err := g.Exit(ctx, []byte("result")); err != nil || string(f.LastExit()) != "result" {
		t.Errorf("Exit: %v; sfld got %q", err, f.LastExit())
	}
	exits, err := g.Join(ctx, tk.ID)
	if err != nil || len(exits) != 2 || string(exits[0].Result) != "one" || !exits[1].Killed {
		t.Errorf("Join = %+v, %v", exits, err)
	}
	if err := g.Kill(ctx, tk.ID); err != nil {
		t.Errorf("Kill: %v", err)
	}
	if err := g.Release(ctx, tk.ID); err != nil {
		t.Errorf("Release: %v", err)
	}
	if me, err := g.WhoAmI(ctx); err != nil || me != (egosf.GuestInfo{VM: "vm-7", Family: "fam-1"}) {
		t.Errorf("WhoAmI = %+v, %v", me, err)
	}
}

func TestGuestErrorsMatchTheirClass(t *testing.T) {
	var f agenttest.Sfld
	g := openGuest(t, f.Handle)
	ctx := context.Background()
	_, err := g.RequestTicket(ctx, 100)
	var ge *guestproto.Error
	if !errors.Is(err, allocator.ErrNoneAvailable) || !errors.As(err, &ge) || ge.Code != "none_available" {
		t.Errorf("RequestTicket(100): %v, want a *guestproto.Error matching allocator.ErrNoneAvailable", err)
	}
	if _, err := g.Clone(ctx, "t-other"); !errors.Is(err, guestproto.ErrNotFound) {
		t.Errorf("Clone of another ticket: %v, want ErrNotFound", err)
	}
	if _, err := g.CreateClones(ctx, "cp-9", "t-1"); !errors.Is(err, guestproto.ErrNotFound) {
		t.Errorf("CreateClones of an unknown checkpoint: %v, want ErrNotFound", err)
	}
}

func TestGuestRefusesBadArgumentsWithoutRoundTrip(t *testing.T) {
	var f agenttest.Sfld
	g := openGuest(t, f.Handle)
	ctx := context.Background()
	calls := map[string]error{}
	_, calls["RequestTicket(0)"] = g.RequestTicket(ctx, 0)
	_, calls["RequestTicket(-3)"] = g.RequestTicket(ctx, -3)
	_, calls["Clone(\"\")"] = g.Clone(ctx, "")
	_, calls["CreateClones(\"\", t)"] = g.CreateClones(ctx, "", "t-1")
	calls["Exit(too long)"] = g.Exit(ctx, make([]byte, guestproto.MaxResult+1))
	_, calls["Join(\"\")"] = g.Join(ctx, "")
	calls["Kill(\"\")"] = g.Kill(ctx, "")
	for call, err := range calls {
		if !errors.Is(err, guestproto.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", call, err)
		}
	}
	if n := f.Requests(); n != 0 {
		t.Errorf("%d bad requests reached sfld", n)
	}
}

func TestOpenGuestOutsideAGuest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sfguest.sock")
	t.Setenv(egosf.GuestSocketEnv, path)
	_, err := egosf.OpenGuest(context.Background())
	if !errors.Is(err, egosf.ErrNotInGuest) || err.Error() != "not inside a SnowFlock guest (no agent at "+path+")" {
		t.Errorf("OpenGuest without an agent: %v", err)
	}
	t.Setenv(egosf.GuestSocketEnv, "")
	if got := egosf.GuestSocket(); got != egosf.DefaultGuestSocket {
		t.Errorf("GuestSocket() = %q without the variable, want %q", got, egosf.DefaultGuestSocket)
	}
}

func TestGuestCallHonoursContextAndStaysUsable(t *testing.T) {
	var f agenttest.Sfld
	g := openGuest(t, func(req *guestproto.Message) *guestproto.Message {
		if req.Op == guestproto.OpJoin {
			return nil // never answered
		}
		return f.Handle(req)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := g.Join(ctx, "t-1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Join past its deadline: %v", err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if me, err := g.WhoAmI(context.Background()); err != nil || me.VM != "vm-7" {
				t.Errorf("concurrent WhoAmI = %+v, %v", me, err)
			}
		})
	}
	wg.Wait()
}
