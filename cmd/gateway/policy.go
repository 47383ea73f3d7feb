package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/policy"
)

func policyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Test policies, explain decisions, build signed bundles"}
	cmd.AddCommand(policyEvalCmd(), policyTestCmd(), policyBuildCmd())
	return cmd
}

func policyBuildCmd() *cobra.Command {
	var o policy.BuildOptions
	var out string
	cmd := &cobra.Command{
		Use:   "build --dir DIR --signing-key KEY [--signing-alg ALG] [--revision R] -o bundle.tar.gz",
		Short: "Build a signed OPA bundle of a policy directory, as opa build --signing-key does, for policy.bundle",
		Long: `Build writes the bundle 'opa build --signing-key KEY [--revision R] DIR' writes (with OPA's own
compile package): the directory's Rego, its intentions.yaml as data.intentions, a manifest and
.signatures.json. It fails if the gateway would refuse the bundle's content. Serve the file over
HTTP(S) and point policy.bundle.url at it; policy.bundle.verification.public_key is the public half
of the signing key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("-o: the bundle file to write is required")
			}
			var buf bytes.Buffer
			if err := policy.Build(cmd.Context(), &buf, o); err != nil {
				return err
			}
			// Written whole or not at all: a half-written bundle on a
			// bundle server's directory would be served.
			tmp := out + ".tmp"
			if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
				return err
			}
			if err := os.Rename(tmp, out); err != nil {
				os.Remove(tmp)
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d bytes)\n", out, buf.Len())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "policies", "policy directory")
	f.StringVar(&o.SigningKey, "signing-key", "", "PEM private key file (PKCS#8, PKCS#1 or SEC1), or for HS* the secret")
	f.StringVar(&o.Algorithm, "signing-alg", policy.DefaultBundleAlgorithm, "signature algorithm: RS256/384/512, PS256/384/512, ES256/384/512, HS256/384/512")
	f.StringVar(&o.KeyID, "signing-key-id", policy.DefaultBundleKeyID, "key id the signature names")
	f.StringVar(&o.Revision, "revision", "", "the manifest's revision, which replicas report as their policy revision")
	f.StringVarP(&out, "output", "o", "bundle.tar.gz", "bundle file to write")
	return cmd
}

func policyTestCmd() *cobra.Command {
	var dir string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "test [--dir DIR]",
		Short: "Run the policies' _test.rego tests with OPA's test runner",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ok, err := policy.Test(cmd.Context(), dir, cmd.OutOrStdout(), verbose)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("policy tests failed")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "policies", "policy directory")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print every test")
	return cmd
}

func policyEvalCmd() *cobra.Command {
	var (
		dir, callerID, resource, action, protocol, key, rangeEnd, method, service string
		prefix, asJSON                                                            bool
		lease                                                                     int64
		valueSize                                                                 int
	)
	cmd := &cobra.Command{
		Use:   "eval --caller ID --resource R --action A [--key K [--prefix | --range-end E]]",
		Short: "Explain one decision: the caller, the op, the matching intentions, the verdict and what decided it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := spiffeid.FromString(callerID)
			if err != nil {
				return fmt.Errorf("--caller: %w", err)
			}
			res, err := gate.ParseResource(resource)
			if err != nil {
				return fmt.Errorf("--resource: %w", err)
			}
			act, err := gate.ParseAction(action)
			if err != nil {
				return fmt.Errorf("--action: %w", err)
			}
			op := gate.Op{Protocol: gate.ProtocolEtcd, Resource: res, Action: act, Method: method,
				Lease: lease, ValueSize: valueSize}
			if protocol == "consul" {
				op.Protocol = gate.ProtocolConsul
			}
			op.Keys.Key = []byte(key)
			switch {
			case prefix:
				op.Keys.End = gate.PrefixEnd(op.Keys.Key)
			case rangeEnd != "":
				op.Keys.End = []byte(rangeEnd)
			}
			if service != "" {
				op.Service = &gate.Service{Name: service}
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			engine, err := policy.Load(cmd.Context(), policy.Config{Dir: dir, Logger: log})
			if err != nil {
				return err
			}
			ex, err := engine.Explain(cmd.Context(), gate.Identity{ID: id}, &op)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(ex)
			}
			fmt.Fprintf(w, "decision:    %s\n", ex.Decision.Effect)
			if ex.Reason != "" {
				fmt.Fprintf(w, "reason:      %s\n", ex.Reason)
			}
			fmt.Fprintf(w, "allowing:    %v\ndenying:     %v\n", ex.Allowing, ex.Denying)
			if len(ex.Overlapping) > 0 {
				fmt.Fprintf(w, "overlapping: %v\n", ex.Overlapping)
			}
			fmt.Fprintf(w, "decided by:  %s\n", ex.Evaluator)
			fmt.Fprintf(w, "revision:    %s\ninput:       %s\n", engine.Revision(), ex.Input)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "policies", "policy directory")
	f.StringVar(&callerID, "caller", "", "the caller's SPIFFE ID")
	f.StringVar(&protocol, "protocol", "etcd", "etcd or consul")
	f.StringVar(&resource, "resource", "kv", "resource: kv, watch, lease, lock, election, session, service, ...")
	f.StringVar(&action, "action", "read", "action: read, write, delete, watch, grant, ...")
	f.StringVar(&key, "key", "", "key (etcd) or key path (consul)")
	f.BoolVar(&prefix, "prefix", false, "the op covers every key with --key as prefix")
	f.StringVar(&rangeEnd, "range-end", "", "range end (etcd semantics)")
	f.StringVar(&method, "method", "", "the gRPC method or HTTP route, e.g. /etcdserverpb.KV/Put")
	f.StringVar(&service, "service", "", "service name (service and check ops)")
	f.Int64Var(&lease, "lease", 0, "lease ID")
	f.IntVar(&valueSize, "value-size", 0, "bytes of value written")
	f.BoolVar(&asJSON, "json", false, "print the explanation as JSON")
	return cmd
}
