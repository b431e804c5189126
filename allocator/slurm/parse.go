package slurm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Parsers of what Slurm's commands print. Each takes outside bytes and
// returns an error (never panics) on anything it does not understand; each
// has a fuzz test.

// maxHosts caps a host list's expansion: a malformed list such as
// n[0-999999999] must not exhaust memory.
const maxHosts = 100000

// expandHosts expands a Slurm host list ("n[1-3,5],m[01-02]-ib,x") into
// host names, in order.
func expandHosts(list string) ([]string, error) {
	list = strings.TrimSpace(list)
	if list == "" || list == "(null)" || list == "None" {
		return nil, nil
	}
	var out []string
	for _, item := range splitTop(list) {
		if item == "" {
			return nil, fmt.Errorf("host list %q: empty item", list)
		}
		names, err := expandOne(item, maxHosts-len(out))
		if err != nil {
			return nil, fmt.Errorf("host list %q: %w", list, err)
		}
		out = append(out, names...)
	}
	return out, nil
}

// splitTop splits at commas outside brackets.
func splitTop(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

// expandOne expands one host pattern with any number of bracket groups.
func expandOne(item string, limit int) ([]string, error) {
	open := strings.IndexByte(item, '[')
	if open < 0 {
		if strings.ContainsAny(item, "] \t") {
			return nil, fmt.Errorf("bad host name %q", item)
		}
		return []string{item}, nil
	}
	end := strings.IndexByte(item[open:], ']')
	if end < 0 {
		return nil, fmt.Errorf("unclosed '[' in %q", item)
	}
	end += open
	prefix, ranges, rest := item[:open], item[open+1:end], item[end+1:]
	if strings.ContainsAny(prefix, "] \t") || strings.Contains(ranges, "[") {
		return nil, fmt.Errorf("bad host pattern %q", item)
	}
	var out []string
	for _, r := range strings.Split(ranges, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.ParseUint(lo, 10, 31)
		b, err2 := strconv.ParseUint(hi, 10, 31)
		if err1 != nil || err2 != nil || b < a || lo == "" || hi == "" {
			return nil, fmt.Errorf("bad range %q in %q", r, item)
		}
		width := 0
		if len(lo) > 1 && lo[0] == '0' {
			width = len(lo)
		}
		if b-a >= uint64(limit) {
			return nil, fmt.Errorf("%q names more than %d hosts", item, maxHosts)
		}
		for n := a; n <= b; n++ {
			tails, err := expandOne(rest, limit-len(out))
			if err != nil {
				return nil, err
			}
			num := fmt.Sprintf("%0*d", width, n)
			for _, t := range tails {
				if len(out) >= limit {
					return nil, fmt.Errorf("%q names more than %d hosts", item, maxHosts)
				}
				out = append(out, prefix+num+t)
			}
		}
	}
	return out, nil
}

// countIDs counts the CPUs in a CPU_IDs list ("0-1,4").
func countIDs(s string) (int, error) {
	n := 0
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || a < 0 || b < a || b-a > 1<<20 {
			return 0, fmt.Errorf("bad CPU list %q", s)
		}
		n += b - a + 1
	}
	return n, nil
}

// nodeInfo is one node of one partition (a line of sinfo -N).
type nodeInfo struct {
	Name, Addr string
	Partition  string
	Default    bool // the cluster's default partition
	CPUs, Idle int
	State      string
	Usable     bool
}

// unusable node states (sinfo %t, compact form).
var unusable = map[string]bool{
	"down": true, "drain": true, "drng": true, "fail": true, "failg": true, "maint": true,
	"inval": true, "unk": true, "boot": true, "powered_down": true, "pow_dn": true, "npc": true,
}

// sinfoFormat is the format parseSinfo reads.
const sinfoFormat = "%N|%o|%C|%t|%P"

// parseSinfo reads `sinfo -h -N -o '%N|%o|%C|%t|%P'`: one line per node and
// partition.
func parseSinfo(out []byte) ([]nodeInfo, error) {
	var nodes []nodeInfo
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 5 {
			return nil, fmt.Errorf("sinfo line %q: want 5 fields", line)
		}
		p, isDefault := strings.CutSuffix(f[4], "*")
		cpus := strings.Split(f[2], "/")
		if len(cpus) != 4 {
			return nil, fmt.Errorf("sinfo line %q: CPUs %q: want A/I/O/T", line, f[2])
		}
		idle, err1 := strconv.Atoi(cpus[1])
		total, err2 := strconv.Atoi(cpus[3])
		if err1 != nil || err2 != nil || idle < 0 || total < 0 || idle > total || f[0] == "" || p == "" {
			return nil, fmt.Errorf("sinfo line %q: bad node, partition or CPU counts", line)
		}
		state := f[3]
		noResponse := strings.HasSuffix(state, "*")
		base := strings.TrimRight(state, "*~#!%$@^-")
		n := nodeInfo{Name: f[0], Addr: f[1], Partition: p, Default: isDefault, CPUs: total, Idle: idle, State: state,
			Usable: !noResponse && !unusable[base]}
		if n.Addr == "" || n.Addr == "(null)" {
			n.Addr = n.Name
		}
		if !n.Usable {
			n.Idle = 0
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// inPartition returns the nodes of partition part ("": the default one) and
// the partition's name.
func inPartition(nodes []nodeInfo, part string) ([]nodeInfo, string) {
	var out []nodeInfo
	for _, n := range nodes {
		if (part == "" && n.Default) || (part != "" && n.Partition == part) {
			out = append(out, n)
			part = n.Partition
		}
	}
	return out, part
}

// jobSummary is one line of squeue.
type jobSummary struct {
	ID       int
	State    string
	NodeList string
	Start    time.Time
	Comment  string
}

// squeueFormat is the format parseSqueue reads; the comment comes last
// because it may contain anything.
const squeueFormat = "%i|%T|%N|%S|%k"

// parseSqueue reads `squeue -h -o '%i|%T|%N|%S|%k'`.
func parseSqueue(out []byte, loc *time.Location) ([]jobSummary, error) {
	var jobs []jobSummary
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "|", 5)
		if len(f) != 5 {
			return nil, fmt.Errorf("squeue line %q: want 5 fields", line)
		}
		id, err := strconv.Atoi(f[0])
		if err != nil || id <= 0 {
			// Array and het jobs (123_4, 123+1) are never ours.
			if strings.ContainsAny(f[0], "_+") {
				continue
			}
			return nil, fmt.Errorf("squeue line %q: bad job ID", line)
		}
		start, err := parseTime(f[3], loc)
		if err != nil {
			return nil, fmt.Errorf("squeue line %q: start: %w", line, err)
		}
		jobs = append(jobs, jobSummary{ID: id, State: f[1], NodeList: f[2], Start: start, Comment: f[4]})
	}
	return jobs, nil
}

// jobInfo is a job as `scontrol show job -d -o` (or slurmrestd) describes it.
type jobInfo struct {
	ID        int
	Name      string
	State     string
	Reason    string
	Partition string
	Comment   string
	NumTasks  int
	Start     time.Time
	End       time.Time // zero: no time limit
	TimeLimit time.Duration
	// CPUs per node, in node order.
	Hosts []hostCPUs
}

type hostCPUs struct {
	Host string
	CPUs int
}

// parseKV splits a one-line scontrol record into key=value pairs, in order
// (keys may repeat: the per-node lines of -d). A value runs to the next
// " Key=" token, so values may hold spaces.
func parseKV(line string) ([][2]string, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil, errors.New("empty record")
	}
	var pairs [][2]string
	fields := strings.Fields(line)
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if ok && isKey(k) {
			pairs = append(pairs, [2]string{k, v})
			continue
		}
		if len(pairs) == 0 {
			return nil, fmt.Errorf("record starts with %q, not Key=Value", f)
		}
		pairs[len(pairs)-1][1] += " " + f
	}
	return pairs, nil
}

func isKey(k string) bool {
	if k == "" || len(k) > 40 || !(k[0] >= 'A' && k[0] <= 'Z' || k[0] >= 'a' && k[0] <= 'z') {
		return false
	}
	for _, r := range k {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("_:/", r)) {
			return false
		}
	}
	return true
}

// parseScontrolJob reads `scontrol show job -d -o ID`: one line.
func parseScontrolJob(out []byte, loc *time.Location) (*jobInfo, error) {
	s := strings.TrimSpace(string(out))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] // one job asked, one line expected
	}
	pairs, err := parseKV(s)
	if err != nil {
		return nil, fmt.Errorf("scontrol job record: %w", err)
	}
	j := &jobInfo{}
	seen := map[string]bool{}
	for i, p := range pairs {
		k, v := p[0], strings.TrimSpace(p[1])
		seen[k] = true
		switch k {
		case "JobId":
			if j.ID != 0 {
				continue // components of het jobs repeat it
			}
			if j.ID, err = strconv.Atoi(v); err != nil || j.ID <= 0 {
				return nil, fmt.Errorf("scontrol job record: bad JobId %q", v)
			}
		case "JobName":
			j.Name = v
		case "JobState":
			j.State = v
		case "Reason":
			j.Reason = v
		case "Partition":
			j.Partition = v
		case "Comment":
			j.Comment = v
			if j.Comment == "(null)" {
				j.Comment = ""
			}
		case "NumTasks":
			if j.NumTasks, err = strconv.Atoi(v); err != nil {
				return nil, fmt.Errorf("scontrol job record: bad NumTasks %q", v)
			}
		case "StartTime":
			if j.Start, err = parseTime(v, loc); err != nil {
				return nil, fmt.Errorf("scontrol job record: StartTime: %w", err)
			}
		case "EndTime":
			if j.End, err = parseTime(v, loc); err != nil {
				return nil, fmt.Errorf("scontrol job record: EndTime: %w", err)
			}
		case "TimeLimit":
			if j.TimeLimit, err = parseLimit(v); err != nil {
				return nil, fmt.Errorf("scontrol job record: TimeLimit: %w", err)
			}
		case "Nodes":
			// -d: "Nodes=n[1-2] CPU_IDs=0-1 Mem=0 GRES=".
			if i+1 >= len(pairs) || pairs[i+1][0] != "CPU_IDs" {
				continue
			}
			names, err := expandHosts(v)
			if err != nil {
				return nil, fmt.Errorf("scontrol job record: %w", err)
			}
			n, err := countIDs(strings.TrimSpace(pairs[i+1][1]))
			if err != nil {
				return nil, fmt.Errorf("scontrol job record: %w", err)
			}
			for _, h := range names {
				j.Hosts = append(j.Hosts, hostCPUs{Host: h, CPUs: n})
			}
			if len(j.Hosts) > maxHosts {
				return nil, fmt.Errorf("scontrol job record: more than %d hosts", maxHosts)
			}
		}
	}
	for _, k := range []string{"JobId", "JobState"} {
		if !seen[k] {
			return nil, fmt.Errorf("scontrol job record has no %s", k)
		}
	}
	return j, nil
}

// parseTime reads Slurm's local time stamps; "Unknown", "None", "N/A" are
// zero.
func parseTime(v string, loc *time.Location) (time.Time, error) {
	switch v {
	case "", "Unknown", "None", "N/A":
		return time.Time{}, nil
	}
	t, err := time.ParseInLocation("2006-01-02T15:04:05", v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q", v)
	}
	return t, nil
}

// parseLimit reads a Slurm time limit: [days-]hours:minutes:seconds,
// minutes:seconds, minutes; UNLIMITED (and NOT_SET, INFINITE) are 0.
func parseLimit(v string) (time.Duration, error) {
	switch v {
	case "UNLIMITED", "INFINITE", "NOT_SET", "Partition_Limit", "":
		return 0, nil
	}
	days := 0
	if d, rest, ok := strings.Cut(v, "-"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 || n > 100000 {
			return 0, fmt.Errorf("bad time limit %q", v)
		}
		days, v = n, rest
	}
	parts := strings.Split(v, ":")
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 1000000 {
			return 0, fmt.Errorf("bad time limit %q", v)
		}
		nums[i] = n
	}
	var h, m, s int
	switch len(nums) {
	case 1:
		m = nums[0]
	case 2:
		m, s = nums[0], nums[1]
	case 3:
		h, m, s = nums[0], nums[1], nums[2]
	default:
		return 0, fmt.Errorf("bad time limit %q", v)
	}
	return time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second, nil
}

// sallocResult is what salloc said on stderr.
type sallocResult struct {
	Granted, Pending int    // job IDs, 0 if not said
	Err              string // the last "error:" message
	NeverFits        bool   // "Requested partition configuration not available now"
}

// parseSalloc reads salloc's messages.
func parseSalloc(out []byte) sallocResult {
	var r sallocResult
	for line := range strings.SplitSeq(string(out), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "salloc:"))
		switch {
		case strings.HasPrefix(line, "Granted job allocation "):
			r.Granted, _ = strconv.Atoi(strings.TrimPrefix(line, "Granted job allocation "))
		case strings.HasPrefix(line, "Pending job allocation "):
			r.Pending, _ = strconv.Atoi(strings.TrimPrefix(line, "Pending job allocation "))
		case strings.HasPrefix(line, "error:"):
			r.Err = strings.TrimSpace(strings.TrimPrefix(line, "error:"))
		case strings.Contains(line, "configuration not available now"):
			r.NeverFits = true
		}
	}
	if r.Granted < 0 {
		r.Granted = 0
	}
	if r.Pending < 0 {
		r.Pending = 0
	}
	return r
}
