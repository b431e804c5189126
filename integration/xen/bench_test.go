//go:build xenbed

package xen

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkXenClone (make bench-xen): one clone of the parent PV guest
// through sfld's Xen backend (xl save -c split into descriptor + memory,
// then xl restore of the joined stream) against the baseline measured in
// the same run, a plain `xl save -c` to a file and `xl restore` of it in
// dom0; and the descriptor's size against the image's.
func BenchmarkXenClone(b *testing.B) {
	name := "sf-" + tb.parent
	for b.Loop() {
		// Through the backend: an operator clone (no guest cooperation).
		t0 := time.Now()
		out, err := tb.sfctl("clone", tb.parent, "-n", "2", "--json")
		if err != nil {
			b.Fatalf("%v\n%s", err, tb.tail())
		}
		total := time.Since(t0)
		var r struct {
			Ticket string `json:"ticket"`
			Timing struct {
				CheckpointMS    float64 `json:"checkpoint_ms"`
				PauseMS         float64 `json:"pause_ms"`
				DescriptorBytes int64   `json:"descriptor_bytes,string"`
			} `json:"timing"`
			Clones []struct {
				StartMS float64 `json:"start_ms"`
			} `json:"clones"`
		}
		if err := json.Unmarshal(out, &r); err != nil || len(r.Clones) != 1 {
			b.Fatalf("sfctl clone --json printed %q: %v", out, err)
		}
		if _, err := tb.sfctl("kill", r.Ticket); err != nil {
			b.Fatal(err)
		}
		// Baseline: the same guest saved and restored by hand.
		base, err := baseline(name)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.Timing.CheckpointMS, "checkpoint-ms")
		b.ReportMetric(r.Timing.PauseMS, "pause-ms")
		b.ReportMetric(r.Clones[0].StartMS, "restore-ms")
		b.ReportMetric(float64(total.Milliseconds()), "clone-total-ms")
		b.ReportMetric(base.saveMS, "xl-save-ms")
		b.ReportMetric(base.restoreMS, "xl-restore-ms")
		b.ReportMetric(float64(total.Milliseconds())/(base.saveMS+base.restoreMS), "clone/xl-ratio")
		b.ReportMetric(float64(r.Timing.DescriptorBytes), "descriptor-bytes")
		b.ReportMetric(float64(base.imageBytes), "image-bytes")
		b.ReportMetric(float64(r.Timing.DescriptorBytes)/float64(base.imageBytes), "descriptor/image")
		fmt.Printf("xen clone: checkpoint %.0f ms (paused %.0f), restore %.0f ms, whole clone %d ms; plain xl save %.0f ms + restore %.0f ms; descriptor %d B vs image %d B\n",
			r.Timing.CheckpointMS, r.Timing.PauseMS, r.Clones[0].StartMS, total.Milliseconds(),
			base.saveMS, base.restoreMS, r.Timing.DescriptorBytes, base.imageBytes)
	}
}

type xlBaseline struct {
	saveMS, restoreMS float64
	imageBytes        int64
}

// baseline times `xl save -c` of the domain into a file and `xl restore`
// of that file as a new domain (destroyed after), in dom0. The image, the
// configuration and the domain go on any failure too.
func baseline(name string) (xlBaseline, error) {
	// busybox date has no %N: times are /proc/uptime's (10 ms steps),
	// printed in ms.
	script := fmt.Sprintf(`set -e
img=/var/lib/snowflock/bench.img
cfg=/var/lib/snowflock/bench.cfg
trap 'xl destroy sf-bench >/dev/null 2>&1; rm -f $img $cfg' EXIT
now() { read -r u _ </proc/uptime; echo "${u%%.*}${u#*.}0"; }
sed -e 's/^name = .*/name = "sf-bench"/' -e 's/mac=[^,]*/mac=00:16:3e:7f:ff:fe/' /var/lib/snowflock/sfld/vms/%s/domain.cfg > $cfg
t0=$(now); xl save -c %s $img 2>&1 | tail -2; t1=$(now)
xl restore -e $cfg $img 2>&1 | tail -2; t2=$(now)
size=$(stat -c %%s $img)
xl destroy sf-bench
echo "$((t1 - t0)) $((t2 - t1)) $size"`, strings.TrimPrefix(name, "sf-"), name)
	ctx, cancel := contextTimeout(5 * time.Minute)
	defer cancel()
	out, err := tb.xen.Exec(ctx, script)
	if err != nil {
		return xlBaseline{}, err
	}
	f := strings.Fields(strings.TrimSpace(out))
	if len(f) < 3 {
		return xlBaseline{}, fmt.Errorf("baseline printed %q", out)
	}
	f = f[len(f)-3:]
	s, err1 := strconv.ParseFloat(f[0], 64)
	r, err2 := strconv.ParseFloat(f[1], 64)
	n, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return xlBaseline{}, fmt.Errorf("baseline printed %q", out)
	}
	return xlBaseline{s, r, n}, nil
}
