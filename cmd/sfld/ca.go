package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/pki"
)

// AdminName is the name of the operator certificate init-ca issues.
const AdminName = "admin"

func newInitCACmd(g *globals) *cobra.Command {
	var caName string
	var hosts []string
	cmd := &cobra.Command{
		Use:   "init-ca",
		Short: "Create the cluster CA, this host's certificate and an operator certificate",
		Long: `init-ca creates the cluster's certificate authority in sfld.tls_dir (ca.crt,
and ca.key which never leaves this host), issues this host's certificate
(NAME.crt/NAME.key, for serving and for calling other hosts) and an operator
certificate for sfctl (admin.crt/admin.key). It refuses to replace an
existing CA.`,
		Example: `  sfld init-ca
  sfld init-ca --host 10.0.0.1 --host node1.example.org`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := g.load()
			if err != nil {
				return err
			}
			dir := l.daemon.TLSDir
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("tls dir: %w", err)
			}
			if err := pki.InitCA(dir, caName); err != nil {
				return err
			}
			if err := pki.Issue(dir, dir, l.daemon.Name, hostNames(l.daemon.Name, l.daemon.Listen, hosts), pki.Both); err != nil {
				return err
			}
			if err := pki.Issue(dir, dir, AdminName, nil, pki.Client); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "CA and certificates for %s and %s written to %s\n", l.daemon.Name, AdminName, dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&caName, "ca-name", "snowflock-ca", "the CA's name (letters, digits, . _ -)")
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "extra DNS name or IP address of this host for its certificate (repeatable)")
	return cmd
}

func newIssueCertCmd(g *globals) *cobra.Command {
	var hosts []string
	var role, out string
	cmd := &cobra.Command{
		Use:   "issue-cert NAME",
		Short: "Issue a certificate from the cluster CA (for another host or operator)",
		Long: `issue-cert issues NAME.crt and NAME.key from the CA in sfld.tls_dir into --out
(default: that directory), with a copy of ca.crt. Copy the three files to the
other host's tls_dir (its sfld.name must be NAME).`,
		Example: `  sfld issue-cert node2 --host 10.0.0.2 --out /tmp/node2
  sfld issue-cert alice --role client`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{Err: fmt.Errorf("want NAME, got %d argument(s)", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := g.load()
			if err != nil {
				return err
			}
			r, err := pki.ParseRole(role)
			if err != nil {
				return usageError{Err: err}
			}
			if out == "" {
				out = l.daemon.TLSDir
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			names := hosts
			if r&pki.Server != 0 {
				names = append([]string{args[0]}, hosts...)
			}
			if err := pki.Issue(l.daemon.TLSDir, out, args[0], names, r); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s\n%s\n", filepath.Join(out, args[0]+".crt"), filepath.Join(out, args[0]+".key"))
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "DNS name or IP address the certificate is valid for (repeatable)")
	cmd.Flags().StringVar(&role, "role", "both", "server, client or both (a host needs both; an operator client)")
	cmd.Flags().StringVar(&out, "out", "", "output directory (default: sfld.tls_dir)")
	return cmd
}

// hostNames lists a host certificate's names: its name, the listen
// address's host, localhost and 127.0.0.1, and extra.
func hostNames(name, listen string, extra []string) []string {
	names := []string{name, "localhost", "127.0.0.1"}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		names = append(names, h)
	}
	return append(names, extra...)
}
