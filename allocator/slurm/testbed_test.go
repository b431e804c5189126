package slurm

// The tests run against a real Slurm cluster (munge, slurmctld, one slurmd
// per node) started once per test run by contrib/testbed/slurm/testbed and
// taken down when the run ends, even if this process is killed (the test
// bed's watchdog follows our PID).

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cluster is the test bed of this run.
var cluster struct {
	dir       string
	conf      string // SLURM_CONF
	restURL   string
	tokenFile string
}

const (
	testNodes = 3
	testCPUs  = 2
	// testCapacity is the CPUs of partition debug (every node).
	testCapacity = testNodes * testCPUs
)

func TestMain(m *testing.M) {
	flag.Parse()
	if helper := os.Getenv("SF_SLURM_TEST_HELPER"); helper != "" {
		os.Exit(runHelper(helper))
	}
	// Fuzzing (-run '^$' -fuzz …) and listing (-list) need no cluster.
	if f := flag.Lookup("test.run"); (f != nil && f.Value.String() == "^$" && !benchmarking()) || flagSet("test.list") {
		os.Exit(m.Run())
	}
	if err := startCluster(); err != nil {
		fmt.Fprintf(os.Stderr, "slurm tests need a real Slurm test bed (root, Debian packages slurmctld slurmd munge slurmrestd): %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := stopCluster(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the Slurm test bed: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

func flagSet(name string) bool {
	f := flag.Lookup(name)
	return f != nil && f.Value.String() != ""
}

func benchmarking() bool { return flagSet("test.bench") }

func testbedScript() string {
	return filepath.Join("..", "..", "contrib", "testbed", "slurm", "testbed")
}

func startCluster() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root")
	}
	cluster.dir = filepath.Join(os.TempDir(), fmt.Sprintf("sf-slurm-test-%d", os.Getpid()))
	cmd := exec.Command(testbedScript(), "up", "--dir", cluster.dir, "--nodes", fmt.Sprint(testNodes),
		"--cpus", fmt.Sprint(testCPUs), "--rest", "--owner", fmt.Sprint(os.Getpid()))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("testbed up: %w", err)
	}
	out, err := exec.Command(testbedScript(), "env", "--dir", cluster.dir).Output()
	if err != nil {
		return fmt.Errorf("testbed env: %w", err)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "SLURM_CONF":
			cluster.conf = v
		case "SLURM_REST_URL":
			cluster.restURL = v
		case "SLURM_JWT_FILE":
			cluster.tokenFile = v
		}
	}
	if cluster.conf == "" || cluster.restURL == "" || cluster.tokenFile == "" {
		return fmt.Errorf("testbed env said %q", out)
	}
	return nil
}

func stopCluster() error {
	cmd := exec.Command(testbedScript(), "down", "--dir", cluster.dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), "TESTBED_QUIET=1")
	return cmd.Run()
}

// slurmCmd runs a Slurm command against the test bed and returns its
// output; the test fails if it fails.
func slurmCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := slurmCmdErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func slurmCmdErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "SLURM_CONF="+cluster.conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// ourJobs lists the jobs in the test bed's queue (pending and running):
// every job there is ours.
func ourJobs(t testing.TB) []jobSummary {
	t.Helper()
	jobs, err := parseSqueue([]byte(slurmCmd(t, "squeue", "-h", "-o", squeueFormat)), time.Local)
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

// clean checks that no request of the test left a pending job, cancels
// the jobs it holds, and waits until the queue is empty.
func clean(t testing.TB) {
	t.Helper()
	for _, j := range ourJobs(t) {
		if j.State == "PENDING" {
			t.Errorf("job %d (%s) left pending", j.ID, j.Comment)
		}
	}
	slurmCmd(t, "scancel", "--quiet", "--user=root")
	deadline := time.Now().Add(20 * time.Second)
	for len(ourJobs(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("jobs still queued 20s after scancel: %+v", ourJobs(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newTestAllocator opens the backend on the test bed in mode (cli or rest);
// the queue is empty when the test starts and when it ends.
func newTestAllocator(t testing.TB, mode string) *Allocator {
	t.Helper()
	if jobs := ourJobs(t); len(jobs) > 0 {
		t.Fatalf("queue not empty at the start of the test: %+v", jobs)
	}
	cfg := Config{SlurmConf: cluster.conf, Partition: "debug", Mode: mode, StateDir: t.TempDir(), PollInterval: 100 * time.Millisecond}
	if mode == ModeREST {
		cfg.RESTURL, cfg.TokenFile = cluster.restURL, cluster.tokenFile
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { clean(t) })
	return a
}
