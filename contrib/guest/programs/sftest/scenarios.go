package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/snowflock/snowflock/contrib/guest/programs/internal/family"
	"github.com/snowflock/snowflock/egosf"
)

// scratch is where the scenarios write files: the guest's tmpfs.
var scratch = os.TempDir()

// fork reads N from args and clones.
func fork(ctx context.Context, g *egosf.Guest, args []string) (*family.Family, error) {
	n, err := count(args, 0)
	if err != nil {
		return nil, err
	}
	return family.Fork(ctx, g, n)
}

// gather ends a clone with its observation obs, or, in the parent, joins
// and returns every VM's observation, the parent's first.
func gather[T any](ctx context.Context, f *family.Family, obs T) ([]T, error) {
	if f.ID > 0 {
		return nil, f.Exit(ctx, obs)
	}
	rs, err := family.Gather[T](ctx, f)
	if err != nil {
		return nil, err
	}
	all := []T{obs}
	for _, r := range rs {
		all = append(all, r.Value)
	}
	return all, nil
}

// report is the parent's output (nil in a clone).
func report(f *family.Family, key string, v any) map[string]any {
	if f.ID > 0 {
		return nil
	}
	return map[string]any{"granted": f.Ticket.Granted, key: v}
}

// ids: each clone exits with its ID; the parent lists them all.
func ids(ctx context.Context, g *egosf.Guest, args []string) (any, error) {
	f, err := fork(ctx, g, args)
	if err != nil {
		return nil, err
	}
	all, err := gather(ctx, f, f.ID)
	if err != nil || f.ID > 0 {
		return nil, err
	}
	slices.Sort(all)
	return report(f, "ids", all), nil
}

// uniform says which byte fills b, or "mixed".
func uniform(b []byte) string {
	if len(b) > 0 && len(bytes.TrimLeft(b, string(b[:1]))) == 0 {
		return string(b[:1])
	}
	return "mixed"
}

type divergence struct {
	ID       int  `json:"id"`
	FileOK   bool `json:"file_ok"`
	MemoryOK bool `json:"memory_ok"`
}

// fill sets every byte of b to c (fast: the parent overwrites at once).
func fill(b []byte, c byte) {
	if len(b) == 0 {
		return
	}
	b[0] = c
	for n := 1; n < len(b); n *= 2 {
		copy(b[n:], b[:n])
	}
}

// diverge: a file and a buffer exist before the clone; after it each VM
// writes its own mark into both, waits, and checks it still reads its own.
func diverge(ctx context.Context, g *egosf.Guest, args []string) (any, error) {
	path := filepath.Join(scratch, "sftest-diverge")
	if err := os.WriteFile(path, []byte("-"), 0o644); err != nil {
		return nil, err
	}
	buf := bytes.Repeat([]byte("-"), 1<<20)
	f, err := fork(ctx, g, args)
	if err != nil {
		return nil, err
	}
	mark := byte('a' + f.ID%26)
	if err := os.WriteFile(path, []byte{mark}, 0o644); err != nil {
		return nil, err
	}
	fill(buf, mark)
	time.Sleep(500 * time.Millisecond)
	got, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obs := divergence{ID: f.ID, FileOK: string(got) == string(mark), MemoryOK: uniform(buf) == string(mark)}
	all, err := gather(ctx, f, obs)
	return report(f, "vms", all), err
}

type isolationView struct {
	ID     int    `json:"id"`
	File   string `json:"file"`
	Memory string `json:"memory"`
}

// isolation: the parent writes A to a file and a 64 MiB buffer, clones,
// and overwrites both with B at once; clones look a second later and must
// see A.
func isolation(ctx context.Context, g *egosf.Guest, args []string) (any, error) {
	path := filepath.Join(scratch, "sftest-isolation")
	if err := os.WriteFile(path, []byte("A"), 0o644); err != nil {
		return nil, err
	}
	buf := bytes.Repeat([]byte("A"), 64<<20)
	f, err := fork(ctx, g, args)
	if err != nil {
		return nil, err
	}
	if f.ID == 0 {
		if err := os.WriteFile(path, []byte("B"), 0o644); err != nil {
			return nil, err
		}
		fill(buf, 'B')
	} else {
		time.Sleep(time.Second)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obs := isolationView{ID: f.ID, File: string(file), Memory: uniform(buf)}
	runtime.KeepAlive(buf)
	all, err := gather(ctx, f, obs)
	if err != nil || f.ID > 0 {
		return nil, err
	}
	return map[string]any{"granted": f.Ticket.Granted, "parent": all[0], "clones": all[1:]}, nil
}

type randomness struct {
	ID         int    `json:"id"`
	Hostname   string `json:"hostname"`
	URandom    string `json:"urandom"`
	CryptoRand string `json:"crypto_rand"`
}

// random: each VM's first 16 bytes of /dev/urandom and of crypto/rand
// after sf_clone, and its hostname.
func random(ctx context.Context, g *egosf.Guest, args []string) (any, error) {
	f, err := fork(ctx, g, args)
	if err != nil {
		return nil, err
	}
	obs := randomness{ID: f.ID}
	u, err := os.Open("/dev/urandom")
	if err != nil {
		return nil, err
	}
	b := make([]byte, 16)
	_, err = io.ReadFull(u, b)
	u.Close()
	if err != nil {
		return nil, fmt.Errorf("/dev/urandom: %w", err)
	}
	obs.URandom = hex.EncodeToString(b)
	rand.Read(b)
	obs.CryptoRand = hex.EncodeToString(b)
	obs.Hostname, _ = os.Hostname()
	all, err := gather(ctx, f, obs)
	return report(f, "vms", all), err
}

// stagger is the delay between clones' exits in the join scenario.
const stagger = 400 * time.Millisecond

// joinAfterLast: clone i exits after i×stagger; the parent's join must
// return only after the last.
func joinAfterLast(ctx context.Context, g *egosf.Guest, args []string) (any, error) {
	f, err := fork(ctx, g, args)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	delay := time.Duration(f.ID) * stagger
	time.Sleep(delay)
	all, err := gather(ctx, f, delay.Milliseconds())
	if err != nil || f.ID > 0 {
		return nil, err
	}
	joined := time.Since(start).Milliseconds()
	last := slices.Max(all)
	return map[string]any{"granted": f.Ticket.Granted, "delays_ms": all[1:], "join_ms": joined, "after_last": joined >= last}, nil
}

// kill: clones never exit; the parent kills them all.
func kill(ctx context.Context, g *egosf.Guest, args []string) (any, error) {
	f, err := fork(ctx, g, args)
	if err != nil {
		return nil, err
	}
	if f.ID > 0 {
		for ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
		return nil, ctx.Err()
	}
	time.Sleep(500 * time.Millisecond) // let the clones run
	start := time.Now()
	if err := g.Kill(ctx, f.Ticket.ID); err != nil {
		return nil, err
	}
	return map[string]any{"granted": f.Ticket.Granted, "ok": true, "kill_ms": time.Since(start).Milliseconds()}, nil
}

// dirtyFree [MiB]: dirties MiB of memory with a pattern in a child process
// that then exits (its pages go back to the kernel, zeroed by
// init_on_free=1) and drops the page cache. Run in a parent before it is
// cloned: the freed memory is zero at the checkpoint and never fetched.
func dirtyFree(_ context.Context, _ *egosf.Guest, args []string) (any, error) {
	mib, err := count(args, 0)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/proc/self/exe", "__dirty", strconv.Itoa(mib))
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dirty child: %v: %s", err, out)
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		return nil, fmt.Errorf("drop caches: %w", err)
	}
	return map[string]any{"freed_mib": mib}, nil
}

// dirty fills MiB of fresh memory with 0xA5 and returns (the process then
// exits and frees it).
func dirty(mib int) {
	buf := make([]byte, mib<<20)
	for i := range buf {
		buf[i] = 0xA5
	}
	runtime.KeepAlive(buf)
}

// touchFree [MiB]: allocates MiB of fresh memory, checks it reads as
// zeros (what a program must see whatever the host did with the pages),
// then writes and reads back a pattern.
func touchFree(_ context.Context, _ *egosf.Guest, args []string) (any, error) {
	mib, err := count(args, 0)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, mib<<20)
	zero := true
	for i := 0; i < len(buf); i += 512 {
		if buf[i] != 0 {
			zero = false
			break
		}
	}
	fill(buf, 0x5A)
	pattern := uniform(buf) == "\x5a"
	runtime.KeepAlive(buf)
	return map[string]any{"mib": mib, "zero": zero, "pattern_ok": pattern}, nil
}
