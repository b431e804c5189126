package slurm

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Replies of slurmrestd's openapi/v0.0.38, as far as the backend reads them.
// Every parser caps nothing itself (the HTTP client caps the body) and
// returns an error, never a panic, on malformed JSON; each has a fuzz test.

type restError struct {
	Error       string `json:"error"`
	Description string `json:"description"`
	ErrorNumber int    `json:"error_number"`
	ErrorCode   int    `json:"error_code"`
}

// restReply is the envelope of every reply.
type restReply struct {
	Errors []restError `json:"errors"`
	// job/submit
	JobID *int `json:"job_id"`
	// nodes
	Nodes []restNode `json:"nodes"`
	// partitions
	Partitions []restPartition `json:"partitions"`
	// jobs, job/{id}
	Jobs []restJob `json:"jobs"`
}

type restNode struct {
	Name       string   `json:"name"`
	Address    string   `json:"address"`
	CPUs       int      `json:"cpus"`
	IdleCPUs   int      `json:"idle_cpus"`
	State      string   `json:"state"`
	StateFlags []string `json:"state_flags"`
	Partitions []string `json:"partitions"`
}

type restPartition struct {
	Name  string   `json:"name"`
	Flags []string `json:"flags"`
}

type restJob struct {
	JobID        int          `json:"job_id"`
	Name         string       `json:"name"`
	UserName     string       `json:"user_name"`
	JobState     string       `json:"job_state"`
	StateReason  string       `json:"state_reason"`
	Partition    string       `json:"partition"`
	Comment      string       `json:"comment"`
	Nodes        string       `json:"nodes"`
	Tasks        int          `json:"tasks"`
	StartTime    int64        `json:"start_time"`
	EndTime      int64        `json:"end_time"`
	TimeLimit    int64        `json:"time_limit"` // minutes
	JobResources *restJobRess `json:"job_resources"`
}

type restJobRess struct {
	AllocatedNodes []struct {
		Nodename string                                       `json:"nodename"`
		Sockets  map[string]struct{ Cores map[string]string } `json:"sockets"`
	} `json:"allocated_nodes"`
}

// parseREST decodes a reply and returns its errors as one message ("" when
// none).
func parseREST(body []byte) (*restReply, string, error) {
	var r restReply
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, "", fmt.Errorf("slurmrestd reply is not the JSON expected: %v", err)
	}
	var msgs []string
	for _, e := range r.Errors {
		m := strings.TrimSpace(e.Error + ": " + e.Description)
		msgs = append(msgs, strings.Trim(m, ": "))
	}
	return &r, strings.Join(msgs, "; "), nil
}

// restNodes turns the nodes and partitions replies into nodeInfo, one per
// node and partition, as sinfo -N prints them.
func restNodes(nodes []restNode, parts []restPartition) ([]nodeInfo, error) {
	def := map[string]bool{}
	for _, p := range parts {
		def[p.Name] = slices.Contains(p.Flags, "default") || slices.Contains(p.Flags, "DEFAULT")
	}
	var out []nodeInfo
	for _, n := range nodes {
		if n.Name == "" || n.CPUs < 0 || n.IdleCPUs < 0 || n.IdleCPUs > n.CPUs {
			return nil, fmt.Errorf("slurmrestd node %q: bad name or CPU counts %d/%d", n.Name, n.IdleCPUs, n.CPUs)
		}
		usable := !unusable[strings.ToLower(n.State)] && n.State != "" && !strings.EqualFold(n.State, "future")
		for _, f := range n.StateFlags {
			switch strings.ToUpper(f) {
			case "DRAIN", "NOT_RESPONDING", "FAIL", "MAINTENANCE", "POWERED_DOWN", "POWERING_DOWN", "REBOOT_REQUESTED", "REBOOT_ISSUED":
				usable = false
			}
		}
		addr := n.Address
		if addr == "" {
			addr = n.Name
		}
		for _, p := range n.Partitions {
			ni := nodeInfo{Name: n.Name, Addr: addr, Partition: p, Default: def[p], CPUs: n.CPUs, Idle: n.IdleCPUs, State: n.State, Usable: usable}
			if !usable {
				ni.Idle = 0
			}
			out = append(out, ni)
		}
	}
	return out, nil
}

// noLimit is how slurmrestd writes an infinite time limit (NO_VAL, INFINITE).
const noLimit = 0xFFFFFFFE

// restJobInfo turns one job of a reply into jobInfo.
func restJobInfo(j restJob) (*jobInfo, error) {
	if j.JobID <= 0 || j.JobState == "" {
		return nil, fmt.Errorf("slurmrestd job without ID or state: %d %q", j.JobID, j.JobState)
	}
	info := &jobInfo{ID: j.JobID, Name: j.Name, State: j.JobState, Reason: j.StateReason, Partition: j.Partition,
		Comment: j.Comment, NumTasks: j.Tasks}
	if j.StartTime > 0 {
		info.Start = time.Unix(j.StartTime, 0)
	}
	if j.TimeLimit > 0 && j.TimeLimit < noLimit && j.TimeLimit < 1<<31 {
		info.TimeLimit = time.Duration(j.TimeLimit) * time.Minute
		if j.EndTime > 0 {
			info.End = time.Unix(j.EndTime, 0)
		}
	}
	if j.JobResources != nil {
		for _, n := range j.JobResources.AllocatedNodes {
			if n.Nodename == "" {
				return nil, fmt.Errorf("slurmrestd job %d: allocated node without a name", j.JobID)
			}
			cpus := 0
			for _, s := range n.Sockets {
				for _, state := range s.Cores {
					if strings.HasPrefix(state, "allocated") {
						cpus++
					}
				}
			}
			info.Hosts = append(info.Hosts, hostCPUs{Host: n.Nodename, CPUs: cpus})
		}
	}
	return info, nil
}

// restSummary is a job as squeue would list it.
func restSummary(j restJob) jobSummary {
	s := jobSummary{ID: j.JobID, State: j.JobState, NodeList: j.Nodes, Comment: j.Comment}
	if j.StartTime > 0 {
		s.Start = time.Unix(j.StartTime, 0)
	}
	return s
}
