// Package pki is the cluster CA and the mutual TLS that authenticates the
// daemon API (sfld ↔ sfld, sfctl → sfld).
//
// A CA directory holds ca.crt and ca.key; each host or operator gets a
// directory with NAME.crt, NAME.key and a copy of ca.crt. Keys are ECDSA
// P-256, stored as PKCS #8 PEM, mode 0600; nothing here logs or prints key
// material. Errors wrap the service's classes from errdefs (re-exported by
// clonesvc): a bad argument or file ErrInvalidArgument, a missing file
// ErrNotFound, an unverified peer ErrPermissionDenied.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// Validity periods.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that hosts whose clocks lag a little
	// accept a certificate issued just now.
	clockSkew = 5 * time.Minute
)

// File names in a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Role says what a certificate may authenticate: a TLS server, a client or
// both. sfld needs Both: it serves sfctl and calls other sflds.
type Role int

// Roles.
const (
	Server Role = 1 << iota
	Client
	Both = Server | Client
)

// String returns "server", "client" or "both".
func (r Role) String() string {
	switch r {
	case Server:
		return "server"
	case Client:
		return "client"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole parses "server", "client" or "both".
func ParseRole(s string) (Role, error) {
	for _, r := range []Role{Server, Client, Both} {
		if s == r.String() {
			return r, nil
		}
	}
	return 0, fmt.Errorf("pki: %w: role %q: want server, client or both", errdefs.ErrInvalidArgument, s)
}

func (r Role) extKeyUsage() []x509.ExtKeyUsage {
	var u []x509.ExtKeyUsage
	if r&Server != 0 {
		u = append(u, x509.ExtKeyUsageServerAuth)
	}
	if r&Client != 0 {
		u = append(u, x509.ExtKeyUsageClientAuth)
	}
	return u
}

// InitCA creates a cluster CA named name in dir (created 0700 if missing):
// a self-signed ECDSA P-256 certificate valid for CAValidity in ca.crt
// (0644) and its key in ca.key (0600). It refuses to overwrite an existing
// CA.
func InitCA(dir, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("pki: %s already exists: refusing to overwrite a CA", p)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name, Organization: []string{"SnowFlock"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("pki: creating the CA certificate: %w", err)
	}
	// The key first: a crash between the two leaves a key without a
	// certificate, which InitCA then refuses to overwrite (never a
	// certificate whose key is lost).
	if err := writeFile(keyPath, keyPEM, 0o600, false); err != nil {
		return err
	}
	if err := writeFile(certPath, certPEM(der), 0o644, false); err != nil {
		_ = os.Remove(keyPath)
		return err
	}
	return nil
}

// Issue signs a certificate for name with the CA in caDir and writes
// outDir/NAME.crt (0644), outDir/NAME.key (0600) and a copy of ca.crt,
// replacing earlier ones (renewal). hosts are the DNS names and IP
// addresses the holder serves on; a Server or Both certificate needs at
// least one. The certificate is valid for CertValidity, and never past the
// CA's own expiry.
func Issue(caDir, outDir, name string, hosts []string, role Role) error {
	now := time.Now()
	return issue(caDir, outDir, name, hosts, role, now.Add(-clockSkew), now.Add(CertValidity))
}

// issue is Issue with a chosen validity (tests issue expired certificates).
func issue(caDir, outDir, name string, hosts []string, role Role, notBefore, notAfter time.Time) error {
	if err := checkName(name); err != nil {
		return err
	}
	if role != Server && role != Client && role != Both {
		return fmt.Errorf("pki: %w: %v: want Server, Client or Both", errdefs.ErrInvalidArgument, role)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{"SnowFlock"}},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: role.extKeyUsage(),
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if dnsName.MatchString(h) && len(h) <= 253 {
			tmpl.DNSNames = append(tmpl.DNSNames, strings.ToLower(h))
		} else {
			return fmt.Errorf("pki: %w: host %q is neither an IP address nor a DNS name", errdefs.ErrInvalidArgument, h)
		}
	}
	if role&Server != 0 && len(hosts) == 0 {
		return fmt.Errorf("pki: %w: a %v certificate needs at least one host name or address for clients to verify", errdefs.ErrInvalidArgument, role)
	}
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return err
	}
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("pki: signing the certificate for %s: %w", name, err)
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := writeFile(filepath.Join(outDir, name+".key"), keyPEM, 0o600, true); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(outDir, name+".crt"), certPEM(der), 0o644, true); err != nil {
		return err
	}
	if sameDir(caDir, outDir) {
		return nil
	}
	return writeFile(filepath.Join(outDir, CACertFile), certPEM(caCert.Raw), 0o644, true)
}

// dnsName matches a host name: dot-separated labels of letters, digits and
// inner hyphens.
var dnsName = regexp.MustCompile(`^(?i:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.(?i:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?))*$`)

// certName matches a certificate name: it becomes a file name and a CN.
var certName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkName(name string) error {
	if !certName.MatchString(name) || name == "ca" {
		return fmt.Errorf("pki: %w: name %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, not \"ca\"", errdefs.ErrInvalidArgument, name)
	}
	return nil
}

func sameDir(a, b string) bool {
	ai, err1 := os.Stat(a)
	bi, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(ai, bi)
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generating a key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: encoding a key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// loadCA reads the CA certificate and key from dir and checks that they
// belong together.
func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, err := readCert(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, nil, err
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("pki: %s is not a CA certificate", filepath.Join(dir, CACertFile))
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	b, err := readKeyFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, nil, fmt.Errorf("pki: %s: %w: no PEM \"PRIVATE KEY\" block", keyPath, errdefs.ErrInvalidArgument)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %s: %w: %w", keyPath, errdefs.ErrInvalidArgument, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("pki: %w: %s does not match the certificate in %s", errdefs.ErrInvalidArgument, keyPath, CACertFile)
	}
	return cert, key, nil
}

// readCert reads the first certificate of a PEM file.
func readCert(path string) (*x509.Certificate, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s: %w: no PEM \"CERTIFICATE\" block", path, errdefs.ErrInvalidArgument)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w: %w", path, errdefs.ErrInvalidArgument, err)
	}
	return cert, nil
}

// readKeyFile reads a private key file, refusing one that group or others
// may read.
func readKeyFile(path string) ([]byte, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("pki: %w: private key %s has mode %04o: it must not be accessible to group or others (chmod 600)", errdefs.ErrInvalidArgument, path, perm)
	}
	return b, nil
}

// readFile reads a PKI file; a missing one wraps errdefs.ErrNotFound.
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pki: %w: %w", errdefs.ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return b, nil
}

// writeFile writes data to path through a synced temporary file in the same
// directory, so that path is never seen half-written. With replace false it
// fails if path exists (the link is atomic).
func writeFile(path string, data []byte, mode os.FileMode, replace bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename, there is nothing to remove
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && replace {
		err = os.Rename(tmp, path)
	} else if err == nil {
		err = os.Link(tmp, path)
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("pki: %s already exists: refusing to overwrite it", path)
	}
	if err != nil {
		return fmt.Errorf("pki: writing %s: %w", path, err)
	}
	return nil
}
