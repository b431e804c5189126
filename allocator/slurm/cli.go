package slurm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

// scheduler is how the backend talks to Slurm: its commands (cli) or
// slurmrestd (rest). Both behave the same; errors wrap allocator classes.
type scheduler interface {
	// nodes lists every node of every partition.
	nodes(ctx context.Context) ([]nodeInfo, error)
	// allocate submits a job and waits until it runs. When ctx ends first,
	// or immediate and it cannot run now, the job is cancelled: nothing
	// stays pending.
	allocate(ctx context.Context, spec jobSpec) (int, error)
	// queue lists the user's jobs; all adds ended jobs Slurm still knows.
	queue(ctx context.Context, all bool) ([]jobSummary, error)
	// job describes one job; nil when Slurm does not know it.
	job(ctx context.Context, id int) (*jobInfo, error)
	// cancel ends jobs; jobs already gone are no error.
	cancel(ctx context.Context, ids ...int) error
	// shrink keeps only hosts of a running job.
	shrink(ctx context.Context, id int, hosts []string) error
	// setTimeLimit changes a job's time limit.
	setTimeLimit(ctx context.Context, id int, limit time.Duration) error
}

// jobSpec is a job to submit.
type jobSpec struct {
	Tasks      int
	Name       string
	Partition  string
	Account    string
	Constraint string
	Comment    string
	Hosts      []string // exactly these nodes (re-allocating part of a node)
	Exclusive  bool
	Immediate  bool
	TimeLimit  time.Duration // 0: partition default
}

// minutes is a time limit in Slurm's unit, rounded up.
func minutes(d time.Duration) int64 {
	return int64((d + time.Minute - 1) / time.Minute)
}

// cli runs Slurm's commands.
type cli struct {
	env  []string // the commands' environment
	user string
}

// newCLI prepares the commands' environment: this process's, without the
// SLURM_*/SALLOC_*/… input variables of an enclosing job (they would change
// what salloc asks for), with SLURM_CONF from the configuration.
func newCLI(conf, user string) *cli {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "SLURM_CONF" && conf == "":
		case strings.HasPrefix(k, "SLURM_"), strings.HasPrefix(k, "SALLOC_"), strings.HasPrefix(k, "SQUEUE_"),
			strings.HasPrefix(k, "SINFO_"), strings.HasPrefix(k, "SCONTROL_"), strings.HasPrefix(k, "SCANCEL_"):
			continue
		}
		env = append(env, kv)
	}
	if conf != "" {
		env = append(env, "SLURM_CONF="+conf)
	}
	return &cli{env: env, user: user}
}

// run runs a Slurm command and returns its standard output.
func (c *cli) run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.env
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	switch {
	case err == nil:
		return stdout.Bytes(), nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s: %w", name, ctxErr(ctx))
	case errors.Is(err, exec.ErrNotFound):
		return nil, fmt.Errorf("%s not found: install Slurm's client commands (Debian: slurm-client): %w", name, allocator.ErrBackendDown)
	}
	msg := oneLine(stderr.String())
	if msg == "" {
		msg = err.Error()
	}
	return stdout.Bytes(), fmt.Errorf("%s %s: %s: %w", name, strings.Join(args, " "), msg, classify(msg))
}

// oneLine joins a command's messages into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// classify maps Slurm's error messages to allocator error classes.
func classify(msg string) error {
	m := strings.ToLower(msg)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(m, s) {
				return true
			}
		}
		return false
	}
	switch {
	case has("unable to contact slurm controller", "connection refused", "socket timed out", "zero bytes were transmitted",
		"communication connection failure", "munge", "authentication", "could not establish", "not responding"):
		return allocator.ErrBackendDown
	case has("invalid partition", "invalid account", "invalid qos", "invalid feature", "invalid constraint",
		"invalid node name", "invalid job id", "access/permission denied", "user's group not permitted",
		"invalid user", "not permitted", "invalid time limit"):
		return allocator.ErrInvalidArgument
	case has("nodes are busy", "resources", "temporarily unavailable", "configuration is not available",
		"more processors requested than permitted", "node count specification invalid", "not available now"):
		return allocator.ErrNoneAvailable
	}
	return allocator.ErrBackendDown
}

// ctxErr maps a finished context to the allocator's error classes.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("deadline passed: %w", allocator.ErrTimeout)
		}
		return fmt.Errorf("%v: %w", context.Cause(ctx), allocator.ErrTimeout)
	}
	return nil
}

func (c *cli) nodes(ctx context.Context) ([]nodeInfo, error) {
	out, err := c.run(ctx, "", "sinfo", "-h", "-N", "-o", sinfoFormat)
	if err != nil {
		return nil, err
	}
	nodes, err := parseSinfo(out)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, allocator.ErrBackendDown)
	}
	return nodes, nil
}

func (c *cli) queue(ctx context.Context, all bool) ([]jobSummary, error) {
	args := []string{"-h", "-u", c.user, "-o", squeueFormat}
	if all {
		args = append(args, "-t", "all")
	}
	out, err := c.run(ctx, "", "squeue", args...)
	if err != nil {
		return nil, err
	}
	jobs, err := parseSqueue(out, time.Local)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, allocator.ErrBackendDown)
	}
	return jobs, nil
}

func (c *cli) job(ctx context.Context, id int) (*jobInfo, error) {
	out, err := c.run(ctx, "", "scontrol", "show", "job", "-d", "-o", strconv.Itoa(id))
	if errors.Is(err, allocator.ErrInvalidArgument) {
		return nil, nil // "Invalid job id specified": gone
	}
	if err != nil {
		return nil, err
	}
	j, err := parseScontrolJob(out, time.Local)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, allocator.ErrBackendDown)
	}
	if j.ID != id {
		return nil, fmt.Errorf("scontrol show job %d described job %d: %w", id, j.ID, allocator.ErrBackendDown)
	}
	return j, nil
}

func (c *cli) cancel(ctx context.Context, ids ...int) error {
	if len(ids) == 0 {
		return nil
	}
	args := []string{"--quiet"}
	for _, id := range ids {
		args = append(args, strconv.Itoa(id))
	}
	_, err := c.run(ctx, "", "scancel", args...)
	if err != nil && (errors.Is(err, allocator.ErrInvalidArgument) || strings.Contains(err.Error(), "already completing or completed")) {
		return nil
	}
	return err
}

func (c *cli) shrink(ctx context.Context, id int, hosts []string) error {
	// scontrol may write slurm_job_ID_resize.{sh,csh} for a shell in the
	// job into its working directory: give it a private one.
	dir, err := os.MkdirTemp("", "sf-slurm-resize-")
	if err != nil {
		return fmt.Errorf("shrinking job %d: %w", id, err)
	}
	defer os.RemoveAll(dir)
	_, err = c.run(ctx, dir, "scontrol", "update", "JobId="+strconv.Itoa(id), "NodeList="+strings.Join(hosts, ","))
	if err != nil && (strings.Contains(err.Error(), "DB index is being set") || strings.Contains(err.Error(), "Unexpected message received")) {
		return fmt.Errorf("%w: %w", errCannotResize, err)
	}
	return err
}

// errCannotResize: Slurm refuses to resize the job again. Without
// accounting (slurmdbd) a job that was resized once never gets the database
// index that further updates wait for.
var errCannotResize = errors.New("Slurm cannot resize this job again")

func (c *cli) setTimeLimit(ctx context.Context, id int, limit time.Duration) error {
	_, err := c.run(ctx, "", "scontrol", "update", "JobId="+strconv.Itoa(id), "TimeLimit="+strconv.FormatInt(minutes(limit), 10))
	return err
}

// sallocArgs is the command line of salloc for spec.
func sallocArgs(spec jobSpec) []string {
	args := []string{"--no-shell", "--ntasks=" + strconv.Itoa(spec.Tasks), "--cpus-per-task=1",
		"--job-name=" + spec.Name, "--comment=" + spec.Comment}
	if spec.Partition != "" {
		args = append(args, "--partition="+spec.Partition)
	}
	if spec.Account != "" {
		args = append(args, "--account="+spec.Account)
	}
	if spec.Constraint != "" {
		args = append(args, "--constraint="+spec.Constraint)
	}
	if len(spec.Hosts) > 0 {
		args = append(args, "--nodelist="+strings.Join(spec.Hosts, ","), "--nodes="+strconv.Itoa(len(spec.Hosts)))
	}
	if spec.Exclusive {
		args = append(args, "--exclusive")
	}
	if spec.Immediate {
		args = append(args, "--immediate")
	}
	if spec.TimeLimit > 0 {
		args = append(args, "--time="+strconv.FormatInt(minutes(spec.TimeLimit), 10))
	}
	return args
}

// allocate runs salloc --no-shell. When ctx ends while salloc waits, salloc
// gets SIGTERM, which makes it withdraw the pending job; and since salloc
// runs with a parent-death signal of SIGTERM, the same happens when this
// process dies, by whatever signal. Any job with spec's comment still
// pending afterwards is cancelled too.
func (c *cli) allocate(ctx context.Context, spec jobSpec) (int, error) {
	cmd := exec.Command("salloc", sallocArgs(spec)...)
	cmd.Env = c.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Pdeathsig fires when the thread that started the child exits: keep
	// this goroutine on its thread until salloc is done.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return 0, fmt.Errorf("salloc not found: install Slurm's client commands (Debian: slurm-client): %w", allocator.ErrBackendDown)
		}
		return 0, fmt.Errorf("starting salloc: %v: %w", err, allocator.ErrBackendDown)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			err = <-done
		}
	}
	res := parseSalloc(out.Bytes())
	if ctx.Err() != nil {
		// Whatever salloc managed, the caller gave up: leave nothing.
		c.cleanup(res, spec.Comment)
		return 0, fmt.Errorf("salloc: %w", ctxErr(ctx))
	}
	if err == nil && res.Granted > 0 {
		return res.Granted, nil
	}
	c.cleanup(res, spec.Comment)
	msg := res.Err
	if msg == "" {
		msg = oneLine(out.String())
	}
	if msg == "" && err != nil {
		msg = err.Error()
	}
	if res.NeverFits {
		msg += " (the partition can never run it)"
	}
	return 0, fmt.Errorf("salloc: %s: %w", msg, classify(msg))
}

// cleanup cancels the job salloc named, and any job still carrying comment
// (salloc may have died before naming it).
func (c *cli) cleanup(res sallocResult, comment string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []int
	for _, id := range []int{res.Granted, res.Pending} {
		if id > 0 {
			ids = append(ids, id)
		}
	}
	if jobs, err := c.queue(ctx, false); err == nil {
		for _, j := range jobs {
			if j.Comment == comment {
				ids = append(ids, j.ID)
			}
		}
	}
	_ = c.cancel(ctx, ids...)
}
