package main

import (
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/mtls"
)

func certsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "A development CA that issues X.509-SVIDs"}
	cmd.AddCommand(certsInitCmd(), certsIssueCmd())
	return cmd
}

func certsInitCmd() *cobra.Command {
	var dir, td string
	var force bool
	cmd := &cobra.Command{
		Use:   "init --dir DIR --trust-domain TD",
		Short: "Create a CA and its trust bundle (DIR/bundle.pem)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := spiffeid.TrustDomainFromString(td)
			if err != nil {
				return fmt.Errorf("--trust-domain: %w", err)
			}
			var opts []mtls.CAOption
			if force {
				opts = append(opts, mtls.WithOverwrite())
			}
			if err := mtls.InitCA(dir, t, opts...); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA for %s written to %s (trust bundle: %s/%s)\n", t, dir, dir, mtls.BundleFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "certs", "directory for the CA files")
	cmd.Flags().StringVar(&td, "trust-domain", "example.org", "SPIFFE trust domain of the CA")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing CA")
	return cmd
}

func certsIssueCmd() *cobra.Command {
	var dir, id, out string
	var dns []string
	var ips []net.IP
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "issue --dir DIR --spiffe-id ID [--dns NAME]... [--ip IP]... --out NAME",
		Short: "Issue an X.509-SVID (DIR/NAME.pem) and its key (DIR/NAME-key.pem)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sid, err := spiffeid.FromString(id)
			if err != nil {
				return fmt.Errorf("--spiffe-id: %w", err)
			}
			if out == "" {
				return fmt.Errorf("--out: required")
			}
			cert, key, err := mtls.Issue(dir, mtls.IssueRequest{ID: sid, DNS: dns, IPs: ips, TTL: ttl, Out: out})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s\n", cert, key)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "certs", "directory of the CA (from certs init)")
	cmd.Flags().StringVar(&id, "spiffe-id", "", "SPIFFE ID of the SVID, e.g. spiffe://example.org/web")
	cmd.Flags().StringSliceVar(&dns, "dns", nil, "DNS SAN (repeatable)")
	cmd.Flags().IPSliceVar(&ips, "ip", nil, "IP SAN (repeatable)")
	cmd.Flags().DurationVar(&ttl, "ttl", mtls.DefaultTTL, "validity")
	cmd.Flags().StringVar(&out, "out", "", "base name of the output files")
	return cmd
}
