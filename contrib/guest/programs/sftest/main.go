// Command sftest runs the in-guest side of SnowFlock's integration tests.
// Each scenario clones the VM it runs in, and the parent prints ONE JSON
// object on stdout (its view of the family) and exits 0; on failure it
// prints {"error": "..."} and exits 1. Clones print nothing: their
// observations reach the parent as their exit results (sf_exit → sf_join).
//
//	sftest ids N            clone IDs: {"granted":m,"ids":[0,1,…]}
//	sftest diverge N        each VM keeps its own file and memory
//	sftest isolation N      the parent's writes after sf_clone stay out of the clones
//	sftest random N         each VM's first random bytes and hostname after sf_clone
//	sftest join N           sf_join returns after the last (staggered) sf_exit
//	sftest kill N           sf_kill ends clones that never exit
//	sftest checkpoint [N]   sf_checkpoint_parent: {"checkpoint":cp,"clone_id":0}
//	sftest create-clones CP N   clones of CP, which exit "resumed-at-checkpoint:<id>"
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/snowflock/snowflock/egosf"
)

// scenario runs in every VM of the family; it returns the parent's report
// and nil in a clone.
type scenario func(ctx context.Context, g *egosf.Guest, args []string) (any, error)

var scenarios = map[string]scenario{
	"ids":           ids,
	"diverge":       diverge,
	"isolation":     isolation,
	"random":        random,
	"join":          joinAfterLast,
	"kill":          kill,
	"checkpoint":    checkpoint,
	"create-clones": createClones,
	"dirty-free":    dirtyFree,
	"touch-free":    touchFree,
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "__dirty" {
		mib, err := strconv.Atoi(os.Args[2])
		if err != nil {
			os.Exit(2)
		}
		dirty(mib)
		return
	}
	if len(os.Args) < 2 || scenarios[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: sftest ids|diverge|isolation|random|join|kill N | checkpoint [N] | create-clones CHECKPOINT N")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, err := run(ctx, scenarios[os.Args[1]], os.Args[2:])
	if err != nil {
		report = map[string]string{"error": err.Error()}
	}
	if report != nil {
		json.NewEncoder(os.Stdout).Encode(report)
	}
	if err != nil {
		os.Exit(1)
	}
}

func run(ctx context.Context, s scenario, args []string) (any, error) {
	g, err := egosf.OpenGuest(ctx)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	return s(ctx, g, args)
}

// count reads the scenario's N: args[i], a whole number ≥ 1.
func count(args []string, i int) (int, error) {
	if len(args) <= i {
		return 0, errors.New("missing N, the number of VMs")
	}
	n, err := strconv.Atoi(args[i])
	if err != nil || n < 1 {
		return 0, fmt.Errorf("N %q: want a whole number ≥ 1", args[i])
	}
	return n, nil
}
