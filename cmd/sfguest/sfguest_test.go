package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/egosf/guestagent/agenttest"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// run runs sfguest with args against the agent at socket.
func run(t *testing.T, socket string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("SF_GUEST_SOCKET", socket)
	var out, errb bytes.Buffer
	code = executeWith(&globals{stdout: &out, stderr: &errb}, args, strings.NewReader(stdin))
	return code, out.String(), errb.String()
}

func TestAPICommands(t *testing.T) {
	var s agenttest.Sfld
	sock := agenttest.Start(t, s.Handle).Socket
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"request-ticket", "4"}, "ticket=t-1 granted=3\n"},
		{[]string{"request-ticket", "4", "--quiet"}, "t-1\n"},
		{[]string{"request-ticket", "4", "--json"}, `{"ticket":"t-1","granted":3}` + "\n"},
		{[]string{"clone", "t-1"}, "0\n"},
		{[]string{"clone", "t-1", "--json"}, `{"clone_id":0}` + "\n"},
		{[]string{"checkpoint"}, "checkpoint=cp-1 clone_id=0\n"},
		{[]string{"checkpoint", "-q"}, "cp-1 0\n"},
		{[]string{"checkpoint", "--json"}, `{"checkpoint":"cp-1","clone_id":0}` + "\n"},
		{[]string{"create-clones", "cp-1", "t-1", "--quiet"}, "2\n"},
		{[]string{"join", "t-1"}, "clone_id=1 exited result=\"one\"\nclone_id=2 killed reason=\"vm died\"\n"},
		{[]string{"join", "t-1", "--json"}, `{"exits":[{"clone_id":1,"result":"one"},{"clone_id":2,"killed":true,"reason":"vm died"}]}` + "\n"},
		{[]string{"kill", "t-1"}, ""},
		{[]string{"release", "t-1"}, ""},
		{[]string{"whoami"}, "vm=vm-7 family=fam-1 clone_id=0\n"},
		{[]string{"whoami", "--json"}, `{"vm":"vm-7","family":"fam-1","clone_id":0}` + "\n"},
		{[]string{"exit", "--result", "42"}, ""},
	} {
		code, out, errs := run(t, sock, "", c.args...)
		if code != exitOK || out != c.want {
			t.Errorf("sfguest %s: exit %d, stdout %q (stderr %q); want 0 and %q", strings.Join(c.args, " "), code, out, errs, c.want)
		}
	}
	if string(s.LastExit()) != "42" {
		t.Errorf("exit --result 42 reached sfld as %q", s.LastExit())
	}
	run(t, sock, "from stdin", "exit", "--result-file", "-")
	if string(s.LastExit()) != "from stdin" {
		t.Errorf("exit --result-file - reached sfld as %q", s.LastExit())
	}
}

func TestFailuresAreOneLineWithTheirStatus(t *testing.T) {
	var s agenttest.Sfld
	sock := agenttest.Start(t, s.Handle).Socket
	big := filepath.Join(t.TempDir(), "big")
	os.WriteFile(big, make([]byte, guestproto.MaxResult+1), 0o644)
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"clone", "t-9"}, exitUsage, `sf_clone: no ticket "t-9" of this VM`},
		{[]string{"request-ticket", "100"}, exitFailure, "sf_request_ticket: only 3 slots free"},
		{[]string{"request-ticket", "0"}, exitUsage, "want a whole number of clones"},
		{[]string{"request-ticket", "four"}, exitUsage, "want a whole number of clones"},
		{[]string{"request-ticket"}, exitUsage, "want N"},
		{[]string{"whoami", "--json", "--quiet"}, exitUsage, "exclude each other"},
		{[]string{"exit", "--result", "a", "--result-file", big}, exitUsage, "exclude each other"},
		{[]string{"exit", "--result-file", big}, exitUsage, "longer than"},
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
		{[]string{"clone", "--bogus", "t-1"}, exitUsage, "unknown flag"},
	} {
		code, out, errs := run(t, sock, "", c.args...)
		if code != c.code || out != "" || !strings.Contains(errs, c.msg) || strings.Count(errs, "\n") != 1 {
			t.Errorf("sfguest %s: exit %d, stdout %q, stderr %q; want %d and one line with %q",
				strings.Join(c.args, " "), code, out, errs, c.code, c.msg)
		}
	}
}

func TestOutsideAGuest(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sfguest.sock")
	code, _, errs := run(t, sock, "", "whoami")
	if want := "sfguest: not inside a SnowFlock guest (no agent at " + sock + ")\n"; code != exitFailure || errs != want {
		t.Errorf("whoami without an agent: exit %d, stderr %q; want 1 and %q", code, errs, want)
	}
}

func TestJoinShowsBinaryResultsAsBase64(t *testing.T) {
	sock := agenttest.Start(t, func(req *guestproto.Message) *guestproto.Message {
		return &guestproto.Message{Exits: []guestproto.Exit{{CloneID: 1, Result: []byte{0xff, 0x00}}}}
	}).Socket
	_, out, _ := run(t, sock, "", "join", "t", "--json")
	var v struct {
		Exits []struct {
			ResultBase64 []byte `json:"result_base64"`
		} `json:"exits"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Exits) != 1 || !bytes.Equal(v.Exits[0].ResultBase64, []byte{0xff, 0}) {
		t.Errorf("join --json of a binary result: %q (%v)", out, err)
	}
}

func TestListenReplacesStaleSocketOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "sfguest.sock")
	l, err := listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listen(path); err == nil || !strings.Contains(err.Error(), "already listens") {
		t.Errorf("second agent on a live socket: %v", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l, err = listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := listen(file); err == nil {
		t.Error("listen over a regular file")
	}
}
