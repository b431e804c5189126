package slurm

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExpandHosts(t *testing.T) {
	for in, want := range map[string][]string{
		"":                  nil,
		"(null)":            nil,
		"n1":                {"n1"},
		"n[1-3]":            {"n1", "n2", "n3"},
		"n[01-03,7],m5":     {"n01", "n02", "n03", "n7", "m5"},
		"r[1-2]-n[1-2]":     {"r1-n1", "r1-n2", "r2-n1", "r2-n2"},
		"a[9-10]b,c":        {"a9b", "a10b", "c"},
		"sfnode[1-2],other": {"sfnode1", "sfnode2", "other"},
	} {
		got, err := expandHosts(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("expandHosts(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"n[1-", "n[3-1]", "n[x]", "n[]", "a,,b", "n[0-999999999]", "n]1", "n[1-2][3", "a b"} {
		if got, err := expandHosts(bad); err == nil {
			t.Errorf("expandHosts(%q) = %q, want an error", bad, got)
		}
	}
}

func TestParseScontrolJob(t *testing.T) {
	line := "JobId=31 JobName=my job UserId=root(0) JobState=RUNNING Reason=None Partition=debug NumNodes=2 NumCPUs=4 NumTasks=3 " +
		"CPUs/Task=1 StartTime=2026-11-23T07:22:55 EndTime=2026-11-23T08:22:55 TimeLimit=01:00:00 " +
		"JOB_GRES=(null) Nodes=sfnode[1-2] CPU_IDs=0-1 Mem=0 GRES= Nodes=sfnode3 CPU_IDs=1 Mem=0 GRES= Comment=snowflock:of=30 Power="
	j, err := parseScontrolJob([]byte(line+"\n"), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	want := []hostCPUs{{"sfnode1", 2}, {"sfnode2", 2}, {"sfnode3", 1}}
	if j.ID != 31 || j.Name != "my job" || j.State != "RUNNING" || j.NumTasks != 3 || j.Comment != "snowflock:of=30" ||
		j.TimeLimit != time.Hour || !j.End.Equal(j.Start.Add(time.Hour)) || !slices.Equal(j.Hosts, want) {
		t.Errorf("parsed %+v", j)
	}
	// Three tasks on five CPUs (whole cores): three slots.
	if got := jobSlots(j); len(got) != 2 || got[0].Count != 2 || got[1].Count != 1 {
		t.Errorf("jobSlots = %+v, want sfnode1:2 sfnode2:1", got)
	}
	for _, bad := range []string{"", "garbage", "JobId=x JobState=RUNNING", "JobState=RUNNING", "JobId=1 JobState=R Nodes=n[1- CPU_IDs=0",
		"JobId=1 JobState=R StartTime=yesterday", "JobId=1 JobState=R TimeLimit=1:2:3:4", "JobId=1 JobState=R Nodes=n1 CPU_IDs=3-1"} {
		if j, err := parseScontrolJob([]byte(bad), time.UTC); err == nil {
			t.Errorf("parseScontrolJob(%q) = %+v, want an error", bad, j)
		}
	}
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"UNLIMITED": 0, "5": 5 * time.Minute, "5:30": 5*time.Minute + 30*time.Second, "1:00:00": time.Hour,
		"2-01:00:00": 49 * time.Hour,
	} {
		if got, err := parseLimit(in); err != nil || got != want {
			t.Errorf("parseLimit(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
}

func TestParseSinfoAndSqueue(t *testing.T) {
	nodes, err := parseSinfo([]byte("n1|10.0.0.1|0/2/0/2|idle|small\nn1|10.0.0.1|0/2/0/2|idle|debug*\nn2|n2|2/0/0/2|alloc|debug*\nn3||0/4/0/4|down*|debug*\n"))
	if err != nil {
		t.Fatal(err)
	}
	in, name := inPartition(nodes, "")
	if name != "debug" || len(in) != 3 {
		t.Fatalf("default partition %q with %+v", name, in)
	}
	if c, f := slotsOf(in, false); c != 4 || f != 2 {
		t.Errorf("capacity %d free %d, want 4 and 2 (n3 is down)", c, f)
	}
	if in, _ := inPartition(nodes, "small"); len(in) != 1 || in[0].Addr != "10.0.0.1" {
		t.Errorf("partition small: %+v", in)
	}
	jobs, err := parseSqueue([]byte("12|RUNNING|n[1-2]|2026-11-23T07:22:55|snowflock:abc|with|bars\n13_2|PENDING||N/A|x\n"), time.UTC)
	if err != nil || len(jobs) != 1 || jobs[0].Comment != "snowflock:abc|with|bars" || jobs[0].NodeList != "n[1-2]" || jobs[0].Start.Hour() != 7 {
		t.Errorf("parseSqueue = %+v, %v", jobs, err)
	}
	for _, bad := range []string{"x|RUNNING|||", "1|RUNNING", "1|RUNNING|n1|soon|"} {
		if _, err := parseSqueue([]byte(bad), time.UTC); err == nil {
			t.Errorf("parseSqueue(%q) succeeded", bad)
		}
	}
}

func TestParseSalloc(t *testing.T) {
	r := parseSalloc([]byte("salloc: Pending job allocation 3\nsalloc: job 3 queued and waiting for resources\nsalloc: Granted job allocation 3\n"))
	if r.Granted != 3 || r.Pending != 3 {
		t.Errorf("parseSalloc = %+v", r)
	}
	r = parseSalloc([]byte("salloc: error: invalid partition specified: nosuch\nsalloc: error: Job submit/allocate failed: Invalid partition name specified\n"))
	if r.Granted != 0 || !strings.Contains(r.Err, "Invalid partition") {
		t.Errorf("parseSalloc = %+v", r)
	}
}

func FuzzExpandHosts(f *testing.F) {
	for _, s := range []string{"n[1-3]", "n[01-03,7],m5", "r[1-2]-n[1-2]", "a[", "n[0-99999]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hosts, err := expandHosts(s)
		if err == nil && len(hosts) > maxHosts {
			t.Errorf("%q expanded to %d hosts, more than %d", s, len(hosts), maxHosts)
		}
	})
}

func FuzzParseScontrolJob(f *testing.F) {
	f.Add("JobId=31 JobName=x JobState=RUNNING NumTasks=3 StartTime=2026-11-23T07:22:55 TimeLimit=5 Nodes=n[1-2] CPU_IDs=0-1 Mem=0 Comment=snowflock:x")
	f.Add("JobId=1 JobState=PENDING Nodes=n[1-999999] CPU_IDs=0-9999999")
	f.Fuzz(func(t *testing.T, s string) {
		j, err := parseScontrolJob([]byte(s), time.UTC)
		if err != nil {
			return
		}
		if j.ID <= 0 || len(j.Hosts) > maxHosts {
			t.Errorf("accepted %q as %+v", s, j)
		}
		for _, sl := range jobSlots(j) {
			if sl.Count <= 0 {
				t.Errorf("slot %+v from %q", sl, s)
			}
		}
	})
}

func FuzzParseSinfo(f *testing.F) {
	f.Add("n1|10.0.0.1|0/2/0/2|idle|debug*\nn2|n2|2/0/0/2|alloc|debug*")
	f.Fuzz(func(t *testing.T, s string) {
		nodes, err := parseSinfo([]byte(s))
		if err != nil {
			return
		}
		for _, n := range nodes {
			if n.Idle < 0 || n.Idle > n.CPUs || n.Name == "" {
				t.Errorf("accepted node %+v from %q", n, s)
			}
		}
	})
}

func FuzzParseSqueue(f *testing.F) {
	f.Add("12|RUNNING|n[1-2]|2026-11-23T07:22:55|snowflock:abc\n13|PENDING||N/A|")
	f.Fuzz(func(t *testing.T, s string) {
		jobs, err := parseSqueue([]byte(s), time.UTC)
		if err != nil {
			return
		}
		for _, j := range jobs {
			if j.ID <= 0 {
				t.Errorf("accepted job %+v from %q", j, s)
			}
		}
	})
}

func FuzzParseSalloc(f *testing.F) {
	f.Add("salloc: Granted job allocation 3\n")
	f.Add("salloc: Pending job allocation -5\nsalloc: error: x")
	f.Fuzz(func(t *testing.T, s string) {
		if r := parseSalloc([]byte(s)); r.Granted < 0 || r.Pending < 0 {
			t.Errorf("negative job IDs %+v from %q", r, s)
		}
	})
}

// restJobReply is a job/{id} reply of slurmrestd 22.05 (trimmed).
const restJobReply = `{"meta":{},"errors":[],"jobs":[{"job_id":8,"name":"r8","user_name":"root","job_state":"RUNNING",
"state_reason":"None","partition":"debug","comment":"snowflock:y","nodes":"sfnode[1-2]","tasks":3,
"start_time":1795419900,"end_time":1795420200,"time_limit":5,
"job_resources":{"nodes":"sfnode[1-2]","allocated_nodes":[
{"sockets":{"0":{"cores":{"0":"allocated","1":"allocated"}}},"nodename":"sfnode1"},
{"sockets":{"0":{"cores":{"0":"allocated","1":"unallocated"}}},"nodename":"sfnode2"}]}}]}`

func TestParseRESTJob(t *testing.T) {
	r, msg, err := parseREST([]byte(restJobReply))
	if err != nil || msg != "" || len(r.Jobs) != 1 {
		t.Fatalf("parseREST = %+v, %q, %v", r, msg, err)
	}
	j, err := restJobInfo(r.Jobs[0])
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != 8 || j.TimeLimit != 5*time.Minute || j.End.Sub(j.Start) != 5*time.Minute ||
		!slices.Equal(j.Hosts, []hostCPUs{{"sfnode1", 2}, {"sfnode2", 1}}) {
		t.Errorf("restJobInfo = %+v", j)
	}
	_, msg, err = parseREST([]byte(`{"errors":[{"error":"Invalid job id specified","description":"Unable to find JobId=9","error_number":2017}],"jobs":[]}`))
	if err != nil || !strings.Contains(msg, "Invalid job id") {
		t.Errorf("error reply: %q, %v", msg, err)
	}
	for _, bad := range []string{"", "{", `{"jobs":[{"job_id":"x"}]}`, `{"errors":7}`} {
		if _, _, err := parseREST([]byte(bad)); err == nil {
			t.Errorf("parseREST(%q) succeeded", bad)
		}
	}
	nodes, err := restNodes([]restNode{{Name: "n1", Address: "10.0.0.1", CPUs: 2, IdleCPUs: 1, State: "mixed", Partitions: []string{"debug"}},
		{Name: "n2", CPUs: 2, IdleCPUs: 2, State: "idle", StateFlags: []string{"DRAIN"}, Partitions: []string{"debug"}}},
		[]restPartition{{Name: "debug", Flags: []string{"default"}}})
	if err != nil || len(nodes) != 2 || !nodes[0].Default || !nodes[0].Usable || nodes[1].Usable || nodes[1].Idle != 0 {
		t.Errorf("restNodes = %+v, %v", nodes, err)
	}
}

func FuzzParseREST(f *testing.F) {
	f.Add(restJobReply)
	f.Add(`{"nodes":[{"name":"n1","cpus":2,"idle_cpus":2,"state":"idle","partitions":["debug"]}],"partitions":[{"name":"debug","flags":["default"]}]}`)
	f.Add(`{"job_id":5,"errors":[]}`)
	f.Fuzz(func(t *testing.T, s string) {
		r, _, err := parseREST([]byte(s))
		if err != nil {
			return
		}
		for _, j := range r.Jobs {
			if info, err := restJobInfo(j); err == nil {
				for _, sl := range jobSlots(info) {
					if sl.Count <= 0 {
						t.Errorf("slot %+v from %q", sl, s)
					}
				}
			}
		}
		if nodes, err := restNodes(r.Nodes, r.Partitions); err == nil {
			for _, n := range nodes {
				if n.Idle < 0 || n.Idle > n.CPUs {
					t.Errorf("node %+v from %q", n, s)
				}
			}
		}
	})
}
