package slurm

import (
	"strconv"
	"testing"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/allocatortest"
)

// BenchmarkGrantRelease measures one grant of 2 slots plus its release
// through the backend (commands, then slurmrestd), and as the baseline, in
// the same run, plain `salloc --no-shell -n 2` + `scancel` of the job.
func BenchmarkGrantRelease(b *testing.B) {
	for _, mode := range modes() {
		b.Run(mode, func(b *testing.B) {
			a := newTestAllocator(b, mode)
			op := func() {
				al, err := a.Request(b.Context(), allocator.Request{Min: 2, Max: 2})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := a.Release(b.Context(), al.ID, nil); err != nil {
					b.Fatal(err)
				}
			}
			baseline := func() {
				out := slurmCmd(b, "salloc", "--no-shell", "-n", "2", "-J", "baseline")
				r := parseSalloc([]byte(out))
				if r.Granted == 0 {
					b.Fatalf("salloc: %s", out)
				}
				slurmCmd(b, "scancel", strconv.Itoa(r.Granted))
			}
			allocatortest.CompareWithBaseline(b, "slurm ("+mode+") grant+release of 2 slots", op,
				"salloc --no-shell -n 2 + scancel", baseline)
		})
	}
}
