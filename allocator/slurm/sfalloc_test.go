package slurm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sfallocBinary builds cmd/sfalloc for end-to-end tests.
func sfallocBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sfalloc")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/sfalloc").CombinedOutput(); err != nil {
		t.Fatalf("building sfalloc: %v\n%s", err, out)
	}
	return bin
}

// sfallocCmd runs sfalloc on the test bed and returns its stdout.
func sfallocCmd(t *testing.T, bin string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "SNOWFLOCK_CONFIG=", "SNOWFLOCK_STATE_DIR="+t.TempDir(), "SNOWFLOCK_ALLOCATOR_BACKEND=slurm",
		"SNOWFLOCK_ALLOCATOR_SLURM_SLURM_CONF="+cluster.conf, "SNOWFLOCK_ALLOCATOR_SLURM_PARTITION=debug", "SLURM_JOB_ID=",
		"SLURM_CONF="+cluster.conf) // for the commands sfalloc runs
	cmd.Env = append(cmd.Env, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sfalloc %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// TestSfallocRun: sfalloc run works unchanged on Slurm, and inside a Slurm
// job uses that job's allocation.
func TestSfallocRun(t *testing.T) {
	bin := sfallocBinary(t)
	newTestAllocator(t, ModeCLI) // an empty queue before and after
	t.Run("new allocation", func(t *testing.T) {
		out := sfallocCmd(t, bin, nil, "run", "-n", "3", "--", "sh", "-c", `echo "$SF_ALLOC_ID $SF_NSLOTS"; squeue -h -o %i`)
		fields := strings.Fields(out)
		if len(fields) != 3 || fields[1] != "3" || "slurm-"+fields[2] != fields[0] {
			t.Fatalf("run printed %q, want its allocation slurm-N, 3 slots, and job N in the queue", out)
		}
		if jobs := ourJobs(t); len(jobs) != 0 && running[jobs[0].State] {
			t.Errorf("run left %+v", jobs)
		}
	})
	t.Run("inside a Slurm job", func(t *testing.T) {
		r := parseSalloc([]byte(slurmCmd(t, "salloc", "--no-shell", "-n", "4", "-J", "outer")))
		if r.Granted == 0 {
			t.Fatal("salloc granted nothing")
		}
		id := strconv.Itoa(r.Granted)
		out := sfallocCmd(t, bin, []string{"SLURM_JOB_ID=" + id}, "run", "-n", "3", "--", "sh", "-c", `echo "$SF_ALLOC_ID $SF_NSLOTS"; squeue -h -o %i`)
		if got := strings.Fields(out); len(got) != 3 || got[0] != "slurm-"+id || got[1] != "3" || got[2] != id {
			t.Fatalf("run inside job %s printed %q, want slurm-%s, 3 slots and no other job", id, out, id)
		}
		jobs := ourJobs(t)
		if len(jobs) != 1 || strconv.Itoa(jobs[0].ID) != id || jobs[0].State != "RUNNING" {
			t.Errorf("after run the queue holds %+v, want the enclosing job %s still running", jobs, id)
		}
	})
}
