package slurm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

// restAPI is the slurmrestd API version the backend speaks.
const restAPI = "/slurm/v0.0.38"

// maxReply caps a slurmrestd reply.
const maxReply = 64 << 20

// holdScript is the batch script of a REST job: slurmrestd submits batch
// jobs only, so the job holds its allocation by sleeping until cancelled.
const holdScript = "#!/bin/sh\nexec sleep infinity\n"

// immediateWait is how long an immediate REST request waits for Slurm's
// scheduler to look at its job (salloc --immediate waits 1 s by default;
// batch jobs are scheduled a little later than salloc's).
const immediateWait = 5 * time.Second

// rest talks to slurmrestd with a JWT (X-SLURM-USER-NAME/-TOKEN).
//
// Differences from the commands, handled by the backend: there is no
// salloc --immediate (a job that Slurm's scheduler does not start at once is
// cancelled), no shrinking by node list (hosts that stay are allocated
// anew), and no connection that ends a pending job when the requester is
// SIGKILLed (cancelled contexts and caught signals do cancel it).
type rest struct {
	base      string
	user      string
	tokenFile string
	client    *http.Client
}

func newREST(cfg Config, user string) (*rest, error) {
	r := &rest{base: strings.TrimRight(cfg.RESTURL, "/"), user: user, tokenFile: cfg.TokenFile, client: &http.Client{}}
	if _, err := r.token(); err != nil {
		return nil, err
	}
	return r, nil
}

// token reads the JWT at each call, so that a renewed token file is used.
func (r *rest) token() (string, error) {
	if r.tokenFile == "" {
		if t := os.Getenv("SLURM_JWT"); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("rest mode needs a token: allocator.slurm.token_file or SLURM_JWT: %w", allocator.ErrInvalidArgument)
	}
	b, err := os.ReadFile(r.tokenFile)
	if err != nil {
		return "", fmt.Errorf("reading the slurmrestd token: %v: %w", err, allocator.ErrInvalidArgument)
	}
	t := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(b)), "SLURM_JWT="))
	if t == "" || strings.ContainsAny(t, " \n\r") {
		return "", fmt.Errorf("token file %s holds no token: %w", r.tokenFile, allocator.ErrInvalidArgument)
	}
	return t, nil
}

// call sends one request and decodes the reply; Slurm's errors in the reply
// become errors of the matching class.
func (r *rest) call(ctx context.Context, method, path string, body any) (*restReply, error) {
	tok, err := r.token()
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("slurmrestd %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+restAPI+path, rd)
	if err != nil {
		return nil, fmt.Errorf("slurmrestd %s %s: %v: %w", method, path, err, allocator.ErrInvalidArgument)
	}
	req.Header.Set("X-SLURM-USER-NAME", r.user)
	req.Header.Set("X-SLURM-USER-TOKEN", tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("slurmrestd %s %s: %w", method, path, ctxErr(ctx))
		}
		return nil, fmt.Errorf("slurmrestd %s %s: %v: %w", method, path, err, allocator.ErrBackendDown)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil || len(data) > maxReply {
		return nil, fmt.Errorf("slurmrestd %s %s: reply unreadable or over %d bytes: %w", method, path, maxReply, allocator.ErrBackendDown)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return nil, fmt.Errorf("slurmrestd %s %s: %s: the token was refused (expired, or not for user %s): %w", method, path, resp.Status, r.user, allocator.ErrBackendDown)
	}
	reply, msg, err := parseREST(data)
	if err != nil {
		return nil, fmt.Errorf("slurmrestd %s %s (%s): %v: %w", method, path, resp.Status, err, allocator.ErrBackendDown)
	}
	if msg != "" {
		return reply, fmt.Errorf("slurmrestd %s %s: %s: %w", method, path, msg, classify(msg))
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("slurmrestd %s %s: %s: %w", method, path, resp.Status, allocator.ErrBackendDown)
	}
	return reply, nil
}

func (r *rest) nodes(ctx context.Context) ([]nodeInfo, error) {
	nodes, err := r.call(ctx, http.MethodGet, "/nodes", nil)
	if err != nil {
		return nil, err
	}
	parts, err := r.call(ctx, http.MethodGet, "/partitions", nil)
	if err != nil {
		return nil, err
	}
	out, err := restNodes(nodes.Nodes, parts.Partitions)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, allocator.ErrBackendDown)
	}
	return out, nil
}

// ended job states: not in squeue's default listing.
var ended = map[string]bool{
	"COMPLETED": true, "CANCELLED": true, "FAILED": true, "TIMEOUT": true, "NODE_FAIL": true, "PREEMPTED": true,
	"BOOT_FAIL": true, "DEADLINE": true, "OUT_OF_MEMORY": true, "REVOKED": true,
}

func (r *rest) queue(ctx context.Context, all bool) ([]jobSummary, error) {
	reply, err := r.call(ctx, http.MethodGet, "/jobs", nil)
	if err != nil {
		return nil, err
	}
	var out []jobSummary
	for _, j := range reply.Jobs {
		if j.UserName != r.user || j.JobID <= 0 || (!all && ended[j.JobState]) {
			continue
		}
		out = append(out, restSummary(j))
	}
	return out, nil
}

func (r *rest) job(ctx context.Context, id int) (*jobInfo, error) {
	reply, err := r.call(ctx, http.MethodGet, "/job/"+strconv.Itoa(id), nil)
	if errors.Is(err, allocator.ErrInvalidArgument) {
		return nil, nil // "Invalid job id specified": gone
	}
	if err != nil {
		return nil, err
	}
	for _, j := range reply.Jobs {
		if j.JobID == id {
			info, err := restJobInfo(j)
			if err != nil {
				return nil, fmt.Errorf("%v: %w", err, allocator.ErrBackendDown)
			}
			return info, nil
		}
	}
	return nil, nil
}

func (r *rest) cancel(ctx context.Context, ids ...int) error {
	for _, id := range ids {
		_, err := r.call(ctx, http.MethodDelete, "/job/"+strconv.Itoa(id), nil)
		if err != nil && !errors.Is(err, allocator.ErrInvalidArgument) && !strings.Contains(err.Error(), "already completing or completed") {
			return err
		}
	}
	return nil
}

// shrink: slurmrestd v0.0.38 refuses a node list for a running job
// ("Invalid node name specified"); the backend allocates the hosts that
// stay anew.
func (r *rest) shrink(context.Context, int, []string) error {
	return fmt.Errorf("slurmrestd v0.0.38 cannot shrink a job by node list: %w", errCannotResize)
}

func (r *rest) setTimeLimit(ctx context.Context, id int, limit time.Duration) error {
	_, err := r.call(ctx, http.MethodPost, "/job/"+strconv.Itoa(id), map[string]any{"time_limit": minutes(limit)})
	return err
}

// submission is the job/submit body for spec.
func submission(spec jobSpec) map[string]any {
	job := map[string]any{
		"name": spec.Name, "tasks": spec.Tasks, "cpus_per_task": 1, "comment": spec.Comment,
		"environment":               map[string]string{"PATH": "/usr/local/bin:/usr/bin:/bin"},
		"current_working_directory": "/",
		"standard_output":           "/dev/null", "standard_error": "/dev/null", "standard_input": "/dev/null",
	}
	if spec.Partition != "" {
		job["partition"] = spec.Partition
	}
	if spec.Account != "" {
		job["account"] = spec.Account
	}
	if spec.Constraint != "" {
		job["constraints"] = spec.Constraint
	}
	if len(spec.Hosts) > 0 {
		// Not in v0.0.38's schema, but its option parser takes sbatch's
		// --nodelist ("required_nodes" is refused).
		job["nodelist"] = strings.Join(spec.Hosts, ",")
		job["nodes"] = strconv.Itoa(len(spec.Hosts))
	}
	if spec.Exclusive {
		job["exclusive"] = "true"
	}
	if spec.TimeLimit > 0 {
		job["time_limit"] = minutes(spec.TimeLimit)
	}
	return map[string]any{"script": holdScript, "job": job}
}

// allocate submits a batch job that sleeps, and waits until it runs. The job
// is cancelled when ctx ends first, when it can never run, or (immediate)
// when Slurm's scheduler found no resources for it.
func (r *rest) allocate(ctx context.Context, spec jobSpec) (int, error) {
	reply, err := r.call(ctx, http.MethodPost, "/job/submit", submission(spec))
	if err != nil {
		r.cleanup(spec.Comment)
		return 0, err
	}
	if reply.JobID == nil || *reply.JobID <= 0 {
		r.cleanup(spec.Comment)
		return 0, fmt.Errorf("slurmrestd accepted the job but named no job ID: %w", allocator.ErrBackendDown)
	}
	id := *reply.JobID
	start := time.Now()
	wait := 20 * time.Millisecond
	for {
		j, err := r.job(ctx, id)
		switch {
		case ctx.Err() != nil:
			r.cleanupJob(id, spec.Comment)
			return 0, fmt.Errorf("waiting for job %d: %w", id, ctxErr(ctx))
		case err != nil:
			r.cleanupJob(id, spec.Comment)
			return 0, fmt.Errorf("waiting for job %d: %w", id, err)
		case j == nil:
			return 0, fmt.Errorf("job %d vanished while pending: %w", id, allocator.ErrBackendDown)
		case running[j.State]:
			return id, nil
		case j.State != "PENDING":
			r.cleanupJob(id, spec.Comment)
			return 0, fmt.Errorf("job %d ended while pending: %s (%s): %w", id, j.State, j.Reason, allocator.ErrBackendDown)
		case j.Reason == "PartitionConfig" || j.Reason == "PartitionNodeLimit" || j.Reason == "BadConstraints":
			r.cleanupJob(id, spec.Comment)
			return 0, fmt.Errorf("job %d can never run in its partition (%s): %w", id, j.Reason, allocator.ErrNoneAvailable)
		case spec.Immediate && (j.Reason == "Resources" || time.Since(start) > immediateWait):
			// "Priority" (jobs ahead of it, often other requests being
			// started at this moment) waits a little more.
			r.cleanupJob(id, spec.Comment)
			return 0, fmt.Errorf("job %d not started at once (%s): %w", id, j.Reason, allocator.ErrNoneAvailable)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(wait*2, 250*time.Millisecond)
	}
}

// cleanupJob cancels job id, which the caller will never hear of.
func (r *rest) cleanupJob(id int, comment string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = r.cancel(ctx, id)
	r.cleanup(comment)
}

// cleanup cancels any pending job carrying comment (a submission whose reply
// was lost).
func (r *rest) cleanup(comment string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jobs, err := r.queue(ctx, false)
	if err != nil {
		return
	}
	for _, j := range jobs {
		if j.Comment == comment {
			_ = r.cancel(ctx, j.ID)
		}
	}
}
