package static

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

func TestLockPool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pool.lock")
	// Readers share the lock.
	r1, err := lockPool(t.Context(), path, true)
	if err != nil {
		t.Fatal(err)
	}
	quick, cancelQuick := context.WithTimeout(t.Context(), time.Second)
	defer cancelQuick()
	r2, err := lockPool(quick, path, true)
	if err != nil {
		t.Fatalf("second reader: %v", err)
	}
	r1()
	r2()
	// A writer excludes readers.
	unlock, err := lockPool(t.Context(), path, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := lockPool(ctx, path, true); !errors.Is(err, allocator.ErrTimeout) {
		t.Fatalf("reader while a writer holds the lock = %v, want ErrTimeout", err)
	}
	// A waiter is woken at once when the holder lets go.
	got := make(chan time.Time, 1)
	go func() {
		u, err := lockPool(t.Context(), path, false)
		if err != nil {
			t.Error(err)
		}
		got <- time.Now()
		u()
	}()
	time.Sleep(100 * time.Millisecond)
	released := time.Now()
	unlock()
	select {
	case at := <-got:
		if at.Sub(released) > time.Second {
			t.Errorf("waiter got the lock %s after its release", at.Sub(released))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never got the lock")
	}
	// The abandoned waiter above left nothing locked behind.
	u, err := lockPool(t.Context(), path, false)
	if err != nil {
		t.Fatal(err)
	}
	u()
}
