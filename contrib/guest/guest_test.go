package guest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// bootTimeout bounds one TCG boot. The image is ready in 3–10 s on an idle
// 2-core machine but much slower while other QEMUs and builds run.
const bootTimeout = 180 * time.Second

// guestDir is where `make guest` puts the image (SF_GUEST_DIR overrides).
func guestDir(t *testing.T) string {
	if d := os.Getenv("SF_GUEST_DIR"); d != "" {
		return d
	}
	d, err := filepath.Abs("../../build/guest")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestBootQ35 boots the guest image under q35/TCG with a virtio-serial port
// named org.snowflock.guest and checks, on the serial console, that init
// reaches its ready line, that the port shows up as /dev/vportNpM, that the
// hostname from sf.hostname= is set and, when the image has the agent, that
// the agent is serving its socket.
func TestBootQ35(t *testing.T) {
	dir := guestDir(t)
	kernel := filepath.Join(dir, "vmlinuz")
	initrd := filepath.Join(dir, "initrd.img")
	for _, f := range []string{kernel, initrd, filepath.Join(dir, "manifest.txt")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("guest image missing (%v): run make guest", err)
		}
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found (run make deps): %v", err)
	}
	manifest, err := os.ReadFile(filepath.Join(dir, "manifest.txt"))
	if err != nil {
		t.Fatal(err)
	}
	hasAgent := regexp.MustCompile(`(?m)^binary /usr/bin/sfguest `).Match(manifest)

	tmp := t.TempDir()
	console := filepath.Join(tmp, "console")
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-accel", "tcg", "-machine", "q35", "-m", "256",
		"-nographic", "-nodefaults", "-no-reboot",
		"-serial", "file:"+console,
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 sf.hostname=guest-test sf.shell=0",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=ch0,path="+filepath.Join(tmp, "ch0.sock")+",server=on,wait=off",
		"-device", "virtserialport,chardev=ch0,name=org.snowflock.guest",
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	ready := regexp.MustCompile(`(?m)^snowflock-guest: ready (.*)$`)
	var out []byte
	var m [][]byte
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case err := <-exited:
			exited <- err
			out, _ = os.ReadFile(console)
			t.Fatalf("qemu exited before the guest was ready (%v, stderr %q); console:\n%s", err, stderr.String(), tail(out))
		case <-ctx.Done():
			out, _ = os.ReadFile(console)
			t.Fatalf("no ready line after %v; console:\n%s", bootTimeout, tail(out))
		case <-tick.C:
			out, err = os.ReadFile(console)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			if m = ready.FindSubmatch(out); m != nil {
				break wait
			}
		}
	}
	t.Logf("q35/TCG: launch → ready in %v", time.Since(start).Round(time.Millisecond))

	fields := parseFields(string(m[1]))
	t.Logf("ready: %s", m[1])
	port := regexp.MustCompile(`(?m)^snowflock-guest: virtio-port (vport\d+p\d+) name=org\.snowflock\.guest dev=/dev/(vport\d+p\d+)\r?$`).FindSubmatch(out)
	if port == nil {
		t.Errorf("no virtio port named org.snowflock.guest with a /dev node on the console:\n%s", tail(out))
	} else if fields["port"] != string(port[1]) {
		t.Errorf("ready line has port=%q, want %q", fields["port"], port[1])
	}
	if fields["hostname"] != "guest-test" {
		t.Errorf("ready line has hostname=%q, want guest-test", fields["hostname"])
	}
	if hasAgent && fields["agent"] != "up" {
		t.Errorf("the image has /usr/bin/sfguest but the ready line has agent=%q", fields["agent"])
	}
	if !hasAgent {
		t.Logf("the image has no sfguest agent (it was not buildable when the image was made)")
	}
	if line := regexp.MustCompile(`(?m)^snowflock-guest: insmod .* failed\r?$`).Find(out); line != nil {
		t.Errorf("%s", line)
	}
}

// parseFields splits "k=v k=v" into a map.
func parseFields(s string) map[string]string {
	f := map[string]string{}
	for _, kv := range strings.Fields(s) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			f[k] = v
		}
	}
	return f
}

// tail returns the last 40 lines of a console log.
func tail(b []byte) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return fmt.Sprintf("%s\n", strings.Join(lines, "\n"))
}
