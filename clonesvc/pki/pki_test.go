package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// newCA makes a CA in a fresh directory.
func newCA(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := InitCA(dir, name); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	return dir
}

// issueTo issues name from caDir into a fresh directory and returns it.
func issueTo(t *testing.T, caDir, name string, role Role, hosts ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := Issue(caDir, dir, name, hosts, role); err != nil {
		t.Fatalf("Issue(%s): %v", name, err)
	}
	return dir
}

func serverTLS(t *testing.T, dir, name string) *tls.Config {
	return mustLoad(t, LoadServerTLS, dir, name)
}
func clientTLS(t *testing.T, dir, name string) *tls.Config {
	return mustLoad(t, LoadClientTLS, dir, name)
}

func mustLoad(t *testing.T, load func(string, string) (*tls.Config, error), dir, name string) *tls.Config {
	t.Helper()
	c, err := load(dir, name)
	if err != nil {
		t.Fatalf("loading %s from %s: %v", name, dir, err)
	}
	return c
}

// rawClientTLS builds a client configuration from the files without the
// checks LoadClientTLS makes, to show what the server itself refuses.
func rawClientTLS(t *testing.T, dir, name string) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := readCert(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, RootCAs: pool}
}

type outcome struct {
	serverPeer, clientPeer string
	serverErr, clientErr   error
}

// handshake connects a client to a server over 127.0.0.1 and exchanges one
// message from the server, which it sends only after verifying the client.
func handshake(t *testing.T, srv, cli *tls.Config) outcome {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		peer string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, srv)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		peer, err := PeerName(tc.ConnectionState())
		if err == nil {
			_, err = tc.Write([]byte("ok"))
		}
		done <- result{peer, err}
	}()
	var o outcome
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), cli)
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2)
		// In TLS 1.3 the server checks the client's certificate after the
		// client's handshake ends: a refusal shows on the first read.
		if _, err = io.ReadFull(conn, buf); err == nil {
			o.clientPeer, err = PeerName(conn.ConnectionState())
		}
		conn.Close()
	}
	o.clientErr = err
	r := <-done
	o.serverPeer, o.serverErr = r.peer, r.err
	return o
}

// refusedByServer fails t unless the server refused the handshake with an
// error mentioning want and the client got no reply.
func (o outcome) refusedByServer(t *testing.T, want string) {
	t.Helper()
	if o.serverErr == nil || !strings.Contains(o.serverErr.Error(), want) {
		t.Errorf("server error %v, want one mentioning %q", o.serverErr, want)
	}
	if o.clientErr == nil {
		t.Error("the refused client got a reply")
	}
}

// refusedByClient fails t unless the client refused the server with an
// error mentioning want.
func (o outcome) refusedByClient(t *testing.T, want string) {
	t.Helper()
	if o.clientErr == nil || !strings.Contains(o.clientErr.Error(), want) {
		t.Errorf("client error %v, want one mentioning %q", o.clientErr, want)
	}
	if o.serverErr == nil {
		t.Error("the server completed a handshake the client refused")
	}
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t, "cluster")
	node1 := issueTo(t, ca, "node1", Both, "127.0.0.1", "localhost")
	node2 := issueTo(t, ca, "node2", Both, "127.0.0.2", "node2.example")
	op := issueTo(t, ca, "operator", Client)
	for _, tc := range []struct{ dir, name string }{{op, "operator"}, {node2, "node2"}} {
		o := handshake(t, serverTLS(t, node1, "node1"), clientTLS(t, tc.dir, tc.name))
		if o.serverErr != nil || o.clientErr != nil {
			t.Fatalf("%s → node1: server %v, client %v", tc.name, o.serverErr, o.clientErr)
		}
		if o.serverPeer != tc.name || o.clientPeer != "node1" {
			t.Errorf("%s → node1: server saw %q, client saw %q", tc.name, o.serverPeer, o.clientPeer)
		}
	}
}

func TestServerRefusesClientOfAnotherCA(t *testing.T) {
	ca, other := newCA(t, "cluster"), newCA(t, "intruder")
	srv := issueTo(t, ca, "node1", Both, "127.0.0.1")
	bad := issueTo(t, other, "mallory", Client)
	cli := clientTLS(t, bad, "mallory")
	cli.RootCAs = clientTLS(t, srv, "node1").RootCAs // mallory trusts the cluster's server
	// and presents its certificate although the server names another CA.
	cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cli.Certificates[0], nil }
	o := handshake(t, serverTLS(t, srv, "node1"), cli)
	o.refusedByServer(t, "unknown authority")
}

func TestServerRefusesClientWithoutCertificate(t *testing.T) {
	ca := newCA(t, "cluster")
	srv := issueTo(t, ca, "node1", Both, "127.0.0.1")
	cli := clientTLS(t, srv, "node1")
	cli.Certificates = nil
	o := handshake(t, serverTLS(t, srv, "node1"), cli)
	o.refusedByServer(t, "didn't provide a certificate")
}

func TestClientRefusesServerOfAnotherCA(t *testing.T) {
	ca, other := newCA(t, "cluster"), newCA(t, "intruder")
	fake := issueTo(t, other, "node1", Both, "127.0.0.1")
	cli := issueTo(t, ca, "operator", Client)
	o := handshake(t, serverTLS(t, fake, "node1"), clientTLS(t, cli, "operator"))
	o.refusedByClient(t, "unknown authority")
}

func TestClientRefusesServerForAnotherHost(t *testing.T) {
	ca := newCA(t, "cluster")
	srv := issueTo(t, ca, "node1", Both, "10.0.0.1", "node1.example")
	cli := issueTo(t, ca, "operator", Client)
	o := handshake(t, serverTLS(t, srv, "node1"), clientTLS(t, cli, "operator"))
	o.refusedByClient(t, "not 127.0.0.1")
}

func TestExpiredCertificates(t *testing.T) {
	ca := newCA(t, "cluster")
	srv := issueTo(t, ca, "node1", Both, "127.0.0.1")
	past := time.Now().Add(-48 * time.Hour)
	old := filepath.Join(t.TempDir(), "old")
	if err := issue(ca, old, "old", []string{"127.0.0.1"}, Both, past, past.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Loading an expired certificate fails, saying so.
	for _, load := range []func(string, string) (*tls.Config, error){LoadServerTLS, LoadClientTLS} {
		if _, err := load(old, "old"); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "has expired") {
			t.Errorf("loading an expired certificate: %v", err)
		}
	}
	// And the peer refuses it when presented anyway.
	o := handshake(t, serverTLS(t, srv, "node1"), rawClientTLS(t, old, "old"))
	o.refusedByServer(t, "expired")
	oldSrv := rawClientTLS(t, old, "old")
	oldSrv.ClientAuth, oldSrv.ClientCAs = tls.RequireAndVerifyClientCert, oldSrv.RootCAs
	o = handshake(t, oldSrv, clientTLS(t, srv, "node1"))
	o.refusedByClient(t, "expired")
}

func TestFileModesAndCopies(t *testing.T) {
	ca := newCA(t, "cluster")
	out := issueTo(t, ca, "node1", Both, "127.0.0.1")
	for path, want := range map[string]os.FileMode{
		filepath.Join(ca, CAKeyFile):    0o600,
		filepath.Join(ca, CACertFile):   0o644,
		filepath.Join(out, "node1.key"): 0o600,
		filepath.Join(out, "node1.crt"): 0o644,
		filepath.Join(out, CACertFile):  0o644,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), want)
		}
	}
	if _, err := os.Stat(filepath.Join(out, CAKeyFile)); err == nil {
		t.Error("Issue copied the CA key")
	}
	a, _ := os.ReadFile(filepath.Join(ca, CACertFile))
	b, _ := os.ReadFile(filepath.Join(out, CACertFile))
	if !bytes.Equal(a, b) {
		t.Error("the issued directory's ca.crt differs from the CA's")
	}
	// Issuing into the CA's own directory works and leaves ca.crt alone.
	if err := Issue(ca, ca, "local", nil, Client); err != nil {
		t.Fatal(err)
	}
	if c, _ := os.ReadFile(filepath.Join(ca, CACertFile)); !bytes.Equal(a, c) {
		t.Error("issuing into the CA directory changed ca.crt")
	}
	if entries, _ := os.ReadDir(out); len(entries) != 3 {
		t.Errorf("Issue left %d files, want 3 (no temporaries)", len(entries))
	}
}

func TestCertificateContents(t *testing.T) {
	ca := newCA(t, "cluster")
	out := issueTo(t, ca, "node1", Server, "192.0.2.7", "Node1.Example", "::1")
	c, err := readCert(filepath.Join(out, "node1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "node1" || len(c.IPAddresses) != 2 || len(c.DNSNames) != 1 || c.DNSNames[0] != "node1.example" {
		t.Errorf("subject %q, IPs %v, DNS %v", c.Subject.CommonName, c.IPAddresses, c.DNSNames)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < CertValidity || life > CertValidity+time.Hour {
		t.Errorf("certificate lives %v, want about a year", life)
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("server certificate has usages %v", c.ExtKeyUsage)
	}
	root, _ := readCert(filepath.Join(ca, CACertFile))
	if !root.IsCA || root.NotAfter.Sub(root.NotBefore) < CAValidity {
		t.Errorf("CA: IsCA %v, lives %v", root.IsCA, root.NotAfter.Sub(root.NotBefore))
	}
	// A server-only certificate cannot be a client.
	if _, err := LoadClientTLS(out, "node1"); err == nil || !strings.Contains(err.Error(), "not valid for client use") {
		t.Errorf("LoadClientTLS(server-only) = %v", err)
	}
	if _, err := LoadServerTLS(issueTo(t, ca, "op", Client), "op"); err == nil || !strings.Contains(err.Error(), "not valid for server use") {
		t.Errorf("LoadServerTLS(client-only) = %v", err)
	}
}

func TestInitCARefusesToOverwrite(t *testing.T) {
	ca := newCA(t, "cluster")
	before, _ := os.ReadFile(filepath.Join(ca, CAKeyFile))
	err := InitCA(ca, "again")
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second InitCA = %v, want a refusal", err)
	}
	if after, _ := os.ReadFile(filepath.Join(ca, CAKeyFile)); !bytes.Equal(before, after) {
		t.Error("second InitCA changed the CA key")
	}
}

func TestLoadErrors(t *testing.T) {
	ca := newCA(t, "cluster")
	a := issueTo(t, ca, "a", Both, "127.0.0.1")
	b := issueTo(t, ca, "b", Both, "127.0.0.1")
	other := issueTo(t, newCA(t, "other"), "a", Both, "127.0.0.1")
	cp := func(from, to string) {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keyB, _ := os.ReadFile(filepath.Join(b, "b.key"))
	cp(filepath.Join(b, "b.key"), filepath.Join(a, "a.key")) // a's certificate, b's key
	_, err := LoadServerTLS(a, "a")
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("key of another certificate: %v", err)
	}
	for _, line := range strings.Split(string(keyB), "\n")[1:3] {
		if err != nil && strings.Contains(err.Error(), line) {
			t.Fatal("the error shows key material")
		}
	}
	cp(filepath.Join(other, CACertFile), filepath.Join(b, CACertFile)) // b now trusts another CA
	if _, err := LoadClientTLS(b, "b"); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "not issued by the CA") {
		t.Errorf("certificate of another CA: %v", err)
	}
	if _, err := LoadServerTLS(t.TempDir(), "a"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), CACertFile) {
		t.Errorf("missing files: %v", err)
	}
	if err := os.Chmod(filepath.Join(other, "a.key"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadServerTLS(other, "a"); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("group-readable key: %v", err)
	}
	if err := Issue(t.TempDir(), t.TempDir(), "x", nil, Client); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Issue without a CA: %v", err)
	}
}

func TestBadArguments(t *testing.T) {
	ca := newCA(t, "cluster")
	out := t.TempDir()
	for _, tc := range []struct {
		name  string
		hosts []string
		role  Role
	}{
		{"../etc", nil, Client},
		{"ca", nil, Client},
		{"", nil, Client},
		{"node", []string{"bad host!"}, Both},
		{"node", []string{"-leading.example"}, Both},
		{"node", nil, Server},
		{"node", []string{"127.0.0.1"}, Role(0)},
	} {
		if err := Issue(ca, out, tc.name, tc.hosts, tc.role); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Issue(%q, %q, %v) = %v, want ErrInvalidArgument", tc.name, tc.hosts, tc.role, err)
		}
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("refused Issue calls left %d files", len(entries))
	}
	if err := InitCA(t.TempDir(), "bad/name"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("InitCA(bad name) = %v", err)
	}
}

func TestRoles(t *testing.T) {
	for _, r := range []Role{Server, Client, Both} {
		if got, err := ParseRole(r.String()); err != nil || got != r {
			t.Errorf("ParseRole(%q) = %v, %v", r.String(), got, err)
		}
	}
	if _, err := ParseRole("admin"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ParseRole(admin) = %v", err)
	}
	if _, err := PeerName(tls.ConnectionState{}); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("PeerName(no handshake) = %v", err)
	}
	if _, err := PeerName(tls.ConnectionState{HandshakeComplete: true}); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("PeerName(unverified) = %v", err)
	}
}
