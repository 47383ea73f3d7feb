package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/telemetry"
)

// devSetup is what `gateway dev` runs: an in-process etcd behind the
// gateway, with a dev CA and SVIDs for the gateway and two example callers.
type devSetup struct {
	dir        string // certificates and etcd data
	policies   string
	listenEtcd string
	admin      string
	etcd       string // "none": no etcd and no etcd front
	etcdClient string // the in-process etcd's client address
	etcdPeer   string
	etcdctl    string // printed etcdctl path; default bin/etcdctl or $PATH
	// The local Consul agent and the gateway's Consul front.
	consul, consulBin, listenConsul, consulHTTP string
	traces                                      string // trace exporter: stdout by default
	plugins                                     string // directory of the example plugins
	pluginsOn                                   bool   // they were found and are loaded
}

func devCmd() *cobra.Command {
	var d devSetup
	var logLevel string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the gateway on an embedded default: in-process etcd, dev CA and SVIDs, example policies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			if _, err := telemetry.ParseExporter(d.traces); err != nil {
				return fmt.Errorf("--traces: %w", err)
			}
			if d.etcd == "none" && d.consul == "none" {
				return errors.New("dev: --etcd none and --consul none leave nothing to serve")
			}
			cfg, etcd, err := d.start(cmd.Context())
			if err != nil {
				return err
			}
			if etcd != nil {
				defer etcd.Close()
			}
			if d.plugins != "none" {
				ps, missing, err := d.devPlugins(d.plugins)
				if err != nil {
					return err
				}
				if len(missing) > 0 {
					log.Warn("example plugins missing (make plugins): running without them", "missing", missing)
				}
				cfg.Plugins, d.pluginsOn = ps, len(ps) > 0
			}
			if bin := findTool("consul", d.consul); bin != "" && d.consul != "none" {
				// The agent logs to a file: its shutdown chatter is not the
				// gateway's, and Ctrl-C should end in silence.
				agent, err := testenv.StartConsul(cmd.Context(), testenv.ConsulSpec{Bin: bin, HTTPAddr: d.consulHTTP,
					Node: "storegate-dev", LogFile: filepath.Join(d.dir, "consul.log")})
				if err != nil {
					return fmt.Errorf("dev: consul: %w", err)
				}
				defer agent.Close()
				d.consulBin = bin
				cfg.Listen.Consul = d.listenConsul
				cfg.Upstreams.Consul = &config.ConsulUpstream{Address: "http://" + d.consulHTTP}
			} else if d.consul != "none" {
				if cfg.Upstreams.Etcd == nil {
					return errors.New("dev: --etcd none needs a consul binary (make consul, or --consul PATH)")
				}
				log.Warn("no consul binary (make consul, or --consul PATH): running without the Consul front")
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if err := d.writeEnvFiles(); err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, log, func() { d.printHelp(cmd.OutOrStdout()) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&d.dir, "dir", ".storegate-dev", "directory for the dev CA, SVIDs and etcd data")
	f.StringVar(&d.policies, "policies", "policies", "policy directory")
	f.StringVar(&d.listenEtcd, "listen-etcd", "127.0.0.1:23790", "the gateway's etcd front")
	f.StringVar(&d.admin, "listen-admin", "127.0.0.1:9901", "the gateway's admin listener")
	f.StringVar(&d.etcd, "etcd", "", "\"none\": no in-process etcd and no etcd front (a Consul-only gateway)")
	f.StringVar(&d.etcdClient, "etcd-client", "127.0.0.1:23799", "client address of the in-process etcd")
	f.StringVar(&d.etcdPeer, "etcd-peer", "127.0.0.1:23800", "peer address of the in-process etcd")
	f.StringVar(&d.etcdctl, "etcdctl", "", "etcdctl path for the printed commands (default: bin/etcdctl, else etcdctl on $PATH)")
	f.StringVar(&d.consul, "consul", "", "consul binary for the local agent (default: bin/consul, else consul on $PATH; \"none\": no Consul)")
	f.StringVar(&d.listenConsul, "listen-consul", "127.0.0.1:8501", "the gateway's Consul front")
	f.StringVar(&d.consulHTTP, "consul-http", "127.0.0.1:18500", "HTTP address of the local Consul agent")
	f.StringVar(&d.traces, "traces", "stdout", "trace exporter, sampling every request: stdout (this terminal), none, or otlp (to $OTEL_EXPORTER_OTLP_ENDPOINT)")
	f.StringVar(&d.plugins, "plugins", "bin/plugins", "directory of the example plugins (make plugins); \"none\": no plugins")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// devCallers are the example callers `gateway dev` issues SVIDs for,
// besides the gateway's and etcd's.
var devCallers = []string{"web", "admin"}

// start makes (or reuses) the dev CA in d.dir with a week's SVIDs, starts
// the in-process etcd (testenv, on d.etcdClient and d.etcdPeer) unless
// --etcd none, and returns the gateway's configuration.
func (d *devSetup) start(ctx context.Context) (*config.Config, *testenv.Etcd, error) {
	abs, err := filepath.Abs(d.dir)
	if err != nil {
		return nil, nil, err
	}
	d.dir = abs
	// An earlier run's CA is kept, so commands pasted before keep working.
	pki, err := testenv.OpenPKI(d.dir, 7*24*time.Hour, devCallers...)
	if err != nil {
		return nil, nil, err
	}
	cfg := &config.Config{
		Listen: config.ListenConfig{Admin: d.admin},
		Identity: config.IdentityConfig{
			Files:        &config.IdentityFiles{Cert: pki.Cert("gateway"), Key: pki.Key("gateway"), Bundle: pki.Bundle()},
			TrustDomains: []string{testenv.TrustDomain.Name()},
		},
		Policy: config.PolicyConfig{Dir: d.policies},
	}
	// In development every request is traced: one in a hundred would look
	// like tracing does not work.
	sampleAll := 1.0
	exporter, _ := telemetry.ParseExporter(d.traces) // checked by the command
	cfg.Telemetry.Traces = config.TracesConfig{Exporter: &exporter, Sampling: &sampleAll}
	cfg.DecisionLog = &config.DecisionLogConfig{Output: filepath.Join(d.dir, "decisions.log"), MaxSizeMB: 10, MaxBackups: 3}
	if d.etcd == "none" {
		cfg.Defaults()
		return cfg, nil, nil
	}

	// The in-process etcd logs to a file, as the agent does: on Ctrl-C it
	// reports its listeners closing as errors.
	etcdLog := filepath.Join(d.dir, "etcd.log")
	etcd, err := testenv.StartEtcd(ctx, testenv.EtcdSpec{Dir: filepath.Join(d.dir, "etcd"), PKI: pki,
		ClientAddrs: []string{d.etcdClient}, PeerAddrs: []string{d.etcdPeer},
		Embed: func(c *embed.Config) { c.LogOutputs = []string{etcdLog} }})
	if err != nil {
		return nil, nil, fmt.Errorf("dev: in-process etcd: %w", err)
	}
	cfg.Listen.Etcd = d.listenEtcd
	cfg.Upstreams.Etcd = &config.EtcdUpstream{
		Endpoints: etcd.Endpoints,
		TLS:       config.TLSFiles{Cert: pki.Cert("gateway"), Key: pki.Key("gateway"), CA: pki.Bundle()},
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		etcd.Close()
		return nil, nil, err
	}
	return cfg, etcd, nil
}

// printHelp prints the commands to paste: each caller's environment file
// to source, then etcdctl and consul with no TLS flags.
func (d *devSetup) printHelp(w io.Writer) {
	web, admin := "source "+shortPath(d.envPath("web")), "source "+shortPath(d.envPath("admin"))
	if d.etcd == "none" {
		fmt.Fprintf(w, `
storegate is ready: Consul front only (--etcd none), admin on http://%[1]s.
Callers: spiffe://example.org/web and spiffe://example.org/admin, each with an environment
file for etcdctl and consul (%[6]s.env, %[7]s.env); policies in %[2]s.
%[3]s
  # every decision is a JSON line in %[4]s/decisions.log; metrics: curl http://%[1]s/metrics
  # the Consul agent's log: %[4]s/consul.log
  # explain a decision:
  %[5]s policy eval --dir %[2]s --caller spiffe://example.org/web --resource kv --action write --key /app/secret/token

`, d.admin, d.policies, d.consulHelp(web), d.dir, self(), shortPath(filepath.Join(d.dir, "web")), shortPath(filepath.Join(d.dir, "admin")))
		return
	}
	fmt.Fprintf(w, `
storegate is ready: etcd front on https://%[1]s, admin on http://%[2]s, in-process etcd on https://%[3]s.
Callers: spiffe://example.org/web and spiffe://example.org/admin, each with an environment
file for etcdctl and consul (%[10]s.env, %[11]s.env); policies in %[4]s.

  # web may use /app/**:
  %[5]s
  etcdctl put /app/greeting hello
  etcdctl get /app/greeting
  etcdctl get /app/ --prefix
  etcdctl watch /app/ --prefix
  # ...but not /app/secret/** (deny wins) or anything outside /app:
  etcdctl put /app/secret/token x      # Error: etcdserver: permission denied
  etcdctl get /other                   # Error: etcdserver: permission denied
%[9]s
  # admin may do everything:
  %[6]s
  etcdctl member list -w table
  etcdctl endpoint status -w table
%[8]s
  # every decision is a JSON line in %[12]s/decisions.log; metrics: curl http://%[2]s/metrics
  # the in-process etcd's and the Consul agent's logs: %[12]s/etcd.log, %[12]s/consul.log
  # spans of every request: %[13]s
  # explain a decision:
  %[7]s policy eval --dir %[4]s --caller spiffe://example.org/web --resource kv --action write --key /app/secret/token

`, d.listenEtcd, d.admin, d.etcdClient, d.policies, web, admin, self(), d.consulHelp(web), d.pluginHelp(),
		shortPath(filepath.Join(d.dir, "web")), shortPath(filepath.Join(d.dir, "admin")), d.dir, d.tracesHelp())
}

// pluginHelp shows what the example plugins do, if they run (as web, whose
// environment the lines before it sourced).
func (d *devSetup) pluginHelp() string {
	if !d.pluginsOn {
		return ""
	}
	return `  # plugins (WebAssembly): values under /app/config/ must be JSON objects with a name,
  # values under /app/private/ are stored encrypted and read back in plain text:
  etcdctl put /app/config/db '{"name":"db","port":5432}'
  etcdctl put /app/config/db 'port=5432'          # Error: etcdserver: permission denied
  etcdctl put /app/private/token s3cr3t
  etcdctl get /app/private/token --print-value-only
`
}

// tracesHelp says where spans go.
func (d *devSetup) tracesHelp() string {
	switch d.traces {
	case "stdout":
		return "printed below as JSON (--traces none to quiet them)"
	case "otlp":
		return "sent over OTLP as the OTEL_EXPORTER_OTLP_* environment says"
	}
	return "not recorded (--traces stdout to see them)"
}

// consulHelp prints consul CLI commands for the Consul front, if it runs;
// source is the line that sources web's environment.
func (d *devSetup) consulHelp(source string) string {
	if d.consulBin == "" {
		return ""
	}
	return fmt.Sprintf(`
  # the same intentions govern Consul (agent on http://%[1]s; keys are read with a leading slash):
  %[2]s
  consul kv put app/greeting hello
  consul kv get -recurse app/
  consul kv put other/x 1             # Error! Failed writing data: Unexpected response code: 403
`, d.consulHTTP, source)
}

// self is how the user reaches this binary: its path, or "gateway".
func self() string {
	p, err := os.Executable()
	if err != nil {
		return "gateway"
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(rel, "..") {
			return "./" + rel
		}
	}
	return p
}
