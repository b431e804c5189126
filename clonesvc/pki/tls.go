package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/snowflock/snowflock/clonesvc/errdefs"
)

// LoadServerTLS returns the configuration for serving the daemon API as
// name from dir (NAME.crt, NAME.key, ca.crt): TLS 1.3 only, and every
// client must present a certificate of the same CA valid for client use.
func LoadServerTLS(dir, name string) (*tls.Config, error) {
	c, ca, err := load(dir, name, Server)
	if err == nil {
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, ca
	}
	return c, err
}

// LoadClientTLS returns the configuration for calling the daemon API as
// name from dir: TLS 1.3 only, presenting NAME.crt, and trusting only
// servers whose certificate the CA in ca.crt signed for the host dialled
// (set ServerName when dialling by another name than the certificate's).
func LoadClientTLS(dir, name string) (*tls.Config, error) {
	c, ca, err := load(dir, name, Client)
	if err == nil {
		c.RootCAs = ca
	}
	return c, err
}

// PeerName returns the common name of the peer's verified certificate: the
// client's on a server, the server's on a client. It fails if the
// handshake is not complete or the peer's certificate was not verified.
func PeerName(state tls.ConnectionState) (string, error) {
	if !state.HandshakeComplete {
		return "", fmt.Errorf("pki: %w: TLS handshake not complete", errdefs.ErrPermissionDenied)
	}
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", fmt.Errorf("pki: %w: the peer presented no verified certificate", errdefs.ErrPermissionDenied)
	}
	cn := state.VerifiedChains[0][0].Subject.CommonName
	if cn == "" {
		return "", fmt.Errorf("pki: %w: the peer's certificate has no common name", errdefs.ErrPermissionDenied)
	}
	return cn, nil
}

// load reads NAME.crt, NAME.key and ca.crt from dir and checks, with clear
// errors, that the key matches the certificate, that the CA signed it, that
// it is valid now and that it may be used in role. It returns a TLS 1.3
// configuration presenting the certificate, and a pool holding the CA.
func load(dir, name string, role Role) (*tls.Config, *x509.CertPool, error) {
	pair, pool, err := loadPair(dir, name, role)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}}, pool, nil
}

func loadPair(dir, name string, role Role) (tls.Certificate, *x509.CertPool, error) {
	if err := checkName(name); err != nil {
		return tls.Certificate{}, nil, err
	}
	caPath, certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	ca, err := readCert(caPath)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM, err := readFile(certPath)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	keyPEM, err := readKeyFile(keyPath)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error names the problem (mismatch, bad PEM), never the key.
		return tls.Certificate{}, nil, fmt.Errorf("pki: %w: %s and %s: %w", errdefs.ErrInvalidArgument, certPath, keyPath, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	now := time.Now()
	_, err = pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: role.extKeyUsage()})
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case err == nil:
		return pair, pool, nil
	case errors.As(err, &unknown):
		return tls.Certificate{}, nil, fmt.Errorf("pki: %w: %s was not issued by the CA in %s", errdefs.ErrInvalidArgument, certPath, caPath)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		which, c := certPath, pair.Leaf
		if now.After(c.NotBefore) && now.Before(c.NotAfter) {
			which, c = caPath, ca
		}
		state := "is not valid yet (check the clock)"
		if now.After(c.NotAfter) {
			state = "has expired: issue a new one"
		}
		return tls.Certificate{}, nil, fmt.Errorf("pki: %w: %s %s: valid from %s to %s", errdefs.ErrInvalidArgument, which, state,
			c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return tls.Certificate{}, nil, fmt.Errorf("pki: %w: %s is not valid for %s use (issue it with role %v)", errdefs.ErrInvalidArgument, certPath, role, Both)
	default:
		return tls.Certificate{}, nil, fmt.Errorf("pki: %w: %s: %w", errdefs.ErrInvalidArgument, certPath, err)
	}
}
