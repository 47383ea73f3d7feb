// Package config is the gateway's one configuration file: its typed
// values, strict decoding, defaults and validation. Tests, the bench and
// `gateway dev` build configurations as values and marshal them.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/storegate/storegate/decisionlog"
	"github.com/storegate/storegate/policy"
	"github.com/storegate/storegate/telemetry"
)

// Config is the gateway's one configuration file, strictly decoded: unknown
// keys are errors, and every problem is reported at once.
type Config struct {
	Listen    ListenConfig    `yaml:"listen,omitempty"`
	Identity  IdentityConfig  `yaml:"identity,omitempty"`
	Upstreams UpstreamsConfig `yaml:"upstreams,omitempty"`
	Policy    PolicyConfig    `yaml:"policy,omitempty"`
	Telemetry TelemetryConfig `yaml:"telemetry,omitempty"`
	Debug     DebugConfig     `yaml:"debug,omitempty"`
	// DecisionLog, when set, writes one JSON line per policy decision.
	DecisionLog *DecisionLogConfig `yaml:"decision_log,omitempty"`
	// Plugins run, in this order (mutators before validators), over every
	// op they match after policy allowed it, and over what goes back.
	Plugins []PluginConfig `yaml:"plugins,omitempty"`
	// Limits bound what callers may hold open at once.
	Limits LimitsConfig `yaml:"limits,omitempty"`
	// Fleet is how the replicas of one fleet find each other: each
	// registers its etcd advertise URLs in etcd, under the reserved prefix,
	// with a lease.
	Fleet FleetConfig `yaml:"fleet,omitempty"`
	// Drain is how a gateway stops on SIGTERM.
	Drain DrainConfig `yaml:"drain,omitempty"`
	// PluginCacheDir keeps plugins' compiled code across restarts (default:
	// the user's cache directory, storegate/wazero; "none": memory only).
	PluginCacheDir string `yaml:"plugin_cache_dir,omitempty"`
}

// DecisionLogConfig is where the decision log goes and how a file of it
// rotates.
type DecisionLogConfig struct {
	Output     string `yaml:"output,omitempty"` // stdout | stderr | a file path
	MaxSizeMB  int    `yaml:"max_size_mb,omitempty"`
	MaxBackups int    `yaml:"max_backups,omitempty"`
	MaxAgeDays int    `yaml:"max_age_days,omitempty"`
	Compress   bool   `yaml:"compress,omitempty"`
	// OnError is what a decision whose line cannot be taken (queue full,
	// writes failing) does: deny (default: no decision goes unrecorded) or
	// drop (the line is dropped and counted, the request proceeds).
	OnError decisionlog.ErrorMode `yaml:"on_error,omitempty"`
	// QueueSize and QueueBytes bound the lines waiting for the writer
	// (default 4096 lines, 8MiB).
	QueueSize  int      `yaml:"queue_size,omitempty"`
	QueueBytes ByteSize `yaml:"queue_bytes,omitempty"`
}

// LimitsConfig bounds the streams and watches callers hold open, per caller
// and in total (0: the default, sized for a 2-core gateway). Beyond them
// callers get etcd's "etcdserver: too many requests".
type LimitsConfig struct {
	StreamsPerCaller int `yaml:"streams_per_caller,omitempty"` // default 1024
	Streams          int `yaml:"streams,omitempty"`            // default 16384
	WatchesPerCaller int `yaml:"watches_per_caller,omitempty"` // default 8192
	Watches          int `yaml:"watches,omitempty"`            // default 65536
	// RefusedBytesPerSecond and RefusedBurstBytes are what the requests
	// the gateway refuses may cost one caller (their size plus 4 KiB
	// each): the burst is free, beyond it the caller's connections are not
	// read until it has paid at the rate (default 16MiB and 16MiB).
	RefusedBytesPerSecond ByteSize `yaml:"refused_bytes_per_second,omitempty"`
	RefusedBurstBytes     ByteSize `yaml:"refused_burst_bytes,omitempty"`
}

// FleetConfig is the replica registry MemberList answers from.
type FleetConfig struct {
	// TTL is the registration lease's: a replica that dies drops out of
	// MemberList within it (default 10s; at least 2s).
	TTL Duration `yaml:"ttl,omitempty"`
}

// DrainConfig bounds a graceful stop.
type DrainConfig struct {
	// Timeout is how long a stopping gateway waits for what is in flight
	// (unary requests, Consul blocking queries, streams told to go) before
	// it closes what is left (default 15s).
	Timeout Duration `yaml:"timeout,omitempty"`
}

// DebugConfig turns on diagnostics that are off in production.
type DebugConfig struct {
	// Pprof serves Go's runtime profiles under /debug/pprof/ on the admin
	// listener (as etcd's --enable-pprof does); off by default, because a
	// profile costs CPU and shows internals.
	Pprof bool `yaml:"pprof,omitempty"`
}

// ListenConfig holds the gateway's listeners.
type ListenConfig struct {
	Etcd string `yaml:"etcd,omitempty"` // etcd v3 gRPC front, TLS only
	// Consul is the Consul /v1 HTTP front, TLS only; empty: no Consul front.
	Consul string `yaml:"consul,omitempty"`
	Admin  string `yaml:"admin,omitempty"` // plain HTTP: /healthz, /readyz
	// EtcdAdvertise are the client URLs MemberList returns for every member;
	// default https://<listen.etcd>.
	EtcdAdvertise []string `yaml:"etcd_advertise,omitempty"`
}

// IdentityConfig is where the gateway's own SVID and trust bundles come from.
type IdentityConfig struct {
	Files        *IdentityFiles `yaml:"files,omitempty"`
	WorkloadAPI  string         `yaml:"workload_api,omitempty"`
	TrustDomains []string       `yaml:"trust_domains,omitempty"`
}

// IdentityFiles are PEM files; they are reloaded when they change.
type IdentityFiles struct {
	Cert   string `yaml:"cert,omitempty"`
	Key    string `yaml:"key,omitempty"`
	Bundle string `yaml:"bundle,omitempty"`
	// Federated maps other trust domains to their bundle files.
	Federated map[string]string `yaml:"federated,omitempty"`
}

// UpstreamsConfig names the real stores.
type UpstreamsConfig struct {
	Etcd   *EtcdUpstream   `yaml:"etcd,omitempty"`
	Consul *ConsulUpstream `yaml:"consul,omitempty"`
}

// ConsulUpstream is a Consul agent reached with the gateway's ACL token.
type ConsulUpstream struct {
	Address   string `yaml:"address,omitempty"` // http(s)://host:port of the agent
	TokenFile string `yaml:"token_file,omitempty"`
	// ForwardCallerTokens passes a caller's own ACL token (X-Consul-Token,
	// Authorization: Bearer, ?token=) on to Consul instead of stripping it;
	// callers without one still get the gateway's. Off by default: with it
	// a caller's token can reach what its own ACLs allow, on top of policy.
	ForwardCallerTokens bool     `yaml:"forward_caller_tokens,omitempty"`
	TLS                 TLSFiles `yaml:"tls,omitempty"` // for an https address
	// MaxValueBytes bounds a KV value (default 512KiB, Consul's default).
	MaxValueBytes ByteSize `yaml:"max_value_bytes,omitempty"`
	// RequestTimeout bounds a request to the agent that is not a blocking
	// query (a blocking query gets its wait plus Consul's jitter on top), so
	// a hung agent answers callers 502 instead of holding them (default
	// 30s).
	RequestTimeout Duration `yaml:"request_timeout,omitempty"`
	// Socket, when set, is the unix socket of a local agent serving its
	// HTTP API there too (Consul's addresses.http = "127.0.0.1
	// unix:///path"): requests go over it instead of loopback TCP, sparing
	// both sides the TCP stack. Only with an http:// address, which still
	// names the agent (Host header, redirects).
	Socket string `yaml:"socket,omitempty"`
}

// EtcdUpstream is an etcd cluster reached with the gateway's credentials.
type EtcdUpstream struct {
	Endpoints    []string `yaml:"endpoints,omitempty"`
	TLS          TLSFiles `yaml:"tls,omitempty"`
	Username     string   `yaml:"username,omitempty"`
	PasswordFile string   `yaml:"password_file,omitempty"`
	DialTimeout  Duration `yaml:"dial_timeout,omitempty"`
	MaxTxnOps    int      `yaml:"max_txn_ops,omitempty"`
	MaxRequest   ByteSize `yaml:"max_request_bytes,omitempty"`
	// RequestTimeout bounds a unary call to etcd for a caller that set no
	// deadline of its own, and every lookup the gateway makes before it
	// decides, so a hung cluster answers DeadlineExceeded instead of
	// holding the caller (default 30s). Lock and Campaign, which wait by
	// design, are not bounded.
	RequestTimeout Duration `yaml:"request_timeout,omitempty"`
}

// TLSFiles are conventional client TLS files for an upstream, or, with
// SPIFFE set, the gateway's own SVID and bundles (from files or the Workload
// API, rotating) for an upstream in a trust domain the gateway trusts.
type TLSFiles struct {
	// SPIFFE is the upstream's SPIFFE ID, or a trust domain
	// (spiffe://example.org) to accept any of its members; set, it replaces
	// cert, key and ca.
	SPIFFE     string `yaml:"spiffe,omitempty"`
	Cert       string `yaml:"cert,omitempty"`
	Key        string `yaml:"key,omitempty"`
	CA         string `yaml:"ca,omitempty"`
	ServerName string `yaml:"server_name,omitempty"`
}

// PolicyConfig locates the Rego policies.
type PolicyConfig struct {
	Dir string `yaml:"dir,omitempty"`
	// Bundle, when set, takes policy from an OPA bundle server instead of
	// Dir (config/bundle.go).
	Bundle *BundleConfig `yaml:"bundle,omitempty"`
	Mode   policy.Mode   `yaml:"mode,omitempty"` // enforce (default) | shadow
	// CacheSize bounds the decisions remembered per policy version
	// (default 65536; 0 turns the cache off). Superseded by CacheBytes.
	CacheSize *int `yaml:"cache_size,omitempty"`
	// CacheBytes bounds the decision cache's memory per policy version;
	// set, it replaces cache_size. Keys over 512 bytes are never cached.
	CacheBytes ByteSize `yaml:"cache_bytes,omitempty"`
	// EvalTimeout bounds every policy evaluation (default 1s); a
	// decision that takes longer denies.
	EvalTimeout Duration `yaml:"eval_timeout,omitempty"`
	// FastPath, when the policy is the shipped intentions engine
	// (authz.rego unmodified and intentions.yaml), decides ops with a
	// matcher compiled from the intentions instead of evaluating the Rego:
	// the same decisions and reasons, in well under a microsecond. Default
	// true; false sends every decision through OPA. Any other Rego always
	// goes through OPA.
	FastPath *bool `yaml:"fast_path,omitempty"`
}

// TelemetryConfig says what the gateway exports besides /metrics, which is
// always served. Where OTLP spans go comes from the OTEL_* environment; what
// the file does not say, the OTEL_* environment decides (the telemetry
// package's doc has the order).
type TelemetryConfig struct {
	Traces TracesConfig `yaml:"traces,omitempty"`
}

// TracesConfig chooses the span exporter and the sampling ratio. A field
// left out (nil) is not said: OTEL_TRACES_EXPORTER and OTEL_TRACES_SAMPLER
// decide it, and with neither no spans are exported and roots are sampled
// at 0.01, parent-based.
type TracesConfig struct {
	Exporter *telemetry.Exporter `yaml:"exporter,omitempty"` // none | otlp | stdout
	// Sampling is the ratio of root spans kept, in [0, 1]; a caller's
	// sampled trace is always continued.
	Sampling *float64 `yaml:"sampling,omitempty"`
}

// defaultDecisionCache is the decision cache's default bound: some MiB.
const defaultDecisionCache = 1 << 16

// Load reads, decodes, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.Resolve(filepath.Dir(path))
	return cfg, nil
}

// Parse decodes strictly, applies defaults and validates.
func Parse(b []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// Unknown keys and bad values (enums, durations, sizes) come back
	// together as one *yaml.TypeError, each with its line, and the rest of
	// the file is decoded regardless: validation then adds its own
	// problems, so the operator sees every one at once. A syntax error
	// leaves nothing to validate.
	var errs []error
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, err
		}
		for _, e := range te.Errors {
			errs = append(errs, errors.New(e))
		}
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &cfg, nil
}

// Fronts names the fronts the configuration runs, e.g. "etcd,consul".
func (c *Config) Fronts() string {
	var fs []string
	if c.Upstreams.Etcd != nil {
		fs = append(fs, "etcd")
	}
	if c.Upstreams.Consul != nil {
		fs = append(fs, "consul")
	}
	return strings.Join(fs, ",")
}

func (c *Config) Defaults() {
	if c.Listen.Etcd == "" && c.Upstreams.Etcd != nil {
		c.Listen.Etcd = "127.0.0.1:23790"
	}
	if c.Listen.Admin == "" {
		c.Listen.Admin = "127.0.0.1:9901"
	}
	if len(c.Listen.EtcdAdvertise) == 0 && c.Listen.Etcd != "" {
		c.Listen.EtcdAdvertise = []string{"https://" + c.Listen.Etcd}
	}
	if c.Policy.Bundle != nil {
		c.Policy.Bundle.defaults()
	} else if c.Policy.Dir == "" {
		c.Policy.Dir = "policies"
	}
	if c.Policy.CacheSize == nil {
		n := defaultDecisionCache
		c.Policy.CacheSize = &n
	}
	if c.Fleet.TTL == 0 {
		c.Fleet.TTL = Duration(10 * time.Second)
	}
	if c.Drain.Timeout == 0 {
		c.Drain.Timeout = Duration(15 * time.Second)
	}
}

// Resolve makes relative paths relative to the config file's directory.
func (c *Config) Resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if f := c.Identity.Files; f != nil {
		abs(&f.Cert)
		abs(&f.Key)
		abs(&f.Bundle)
		for td, p := range f.Federated {
			abs(&p)
			f.Federated[td] = p
		}
	}
	if cu := c.Upstreams.Consul; cu != nil {
		abs(&cu.TokenFile)
		abs(&cu.TLS.Cert)
		abs(&cu.TLS.Key)
		abs(&cu.TLS.CA)
	}
	if e := c.Upstreams.Etcd; e != nil {
		abs(&e.TLS.Cert)
		abs(&e.TLS.Key)
		abs(&e.TLS.CA)
		abs(&e.PasswordFile)
	}
	abs(&c.Policy.Dir)
	if b := c.Policy.Bundle; b != nil {
		b.resolve(abs)
	}
	if dl := c.DecisionLog; dl != nil && dl.Output != "stdout" && dl.Output != "stderr" {
		abs(&dl.Output)
	}
	for i := range c.Plugins {
		abs(&c.Plugins[i].Path)
	}
	if c.PluginCacheDir != "none" {
		abs(&c.PluginCacheDir)
	}
}

func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.Listen.Admin); err != nil {
		bad("listen.admin: %q is not host:port: %v", c.Listen.Admin, err)
	}
	// Each front runs when its listener and upstream are set; either may
	// run alone, and at least one must.
	if (c.Listen.Etcd == "") != (c.Upstreams.Etcd == nil) {
		bad("listen.etcd and upstreams.etcd go together")
	}
	if c.Listen.Etcd != "" {
		if _, _, err := net.SplitHostPort(c.Listen.Etcd); err != nil {
			bad("listen.etcd: %q is not host:port: %v", c.Listen.Etcd, err)
		}
	}
	if c.Upstreams.Etcd == nil && c.Upstreams.Consul == nil {
		bad("upstreams: set etcd, consul or both: with neither there is nothing to serve")
	}
	if (c.Listen.Consul == "") != (c.Upstreams.Consul == nil) {
		bad("listen.consul and upstreams.consul go together")
	}
	if c.Listen.Consul != "" {
		if _, _, err := net.SplitHostPort(c.Listen.Consul); err != nil {
			bad("listen.consul: %q is not host:port: %v", c.Listen.Consul, err)
		}
	}
	if cu := c.Upstreams.Consul; cu != nil {
		if u, err := url.Parse(cu.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("upstreams.consul.address: %q is not an http(s):// URL", cu.Address)
		}
		if (cu.TLS.Cert == "") != (cu.TLS.Key == "") {
			bad("upstreams.consul.tls: cert and key go together")
		}
		if cu.TLS.SPIFFE != "" && (cu.TLS.Cert != "" || cu.TLS.CA != "") {
			bad("upstreams.consul.tls: spiffe replaces cert, key and ca")
		}
		if cu.Socket != "" && !strings.HasPrefix(cu.Address, "http://") {
			bad("upstreams.consul.socket: only with an http:// address (the agent's unix socket carries no TLS)")
		}
	}
	for _, u := range c.Listen.EtcdAdvertise {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
			bad("listen.etcd_advertise: %q is not an https:// URL", u)
		}
	}
	id := c.Identity
	switch {
	case id.Files == nil && id.WorkloadAPI == "":
		bad("identity: set files or workload_api")
	case id.Files != nil && id.WorkloadAPI != "":
		bad("identity: set only one of files and workload_api")
	case id.Files != nil:
		if id.Files.Cert == "" || id.Files.Key == "" || id.Files.Bundle == "" {
			bad("identity.files: cert, key and bundle are all required")
		}
		for td := range id.Files.Federated {
			if _, err := spiffeid.TrustDomainFromString(td); err != nil {
				bad("identity.files.federated: %q: %v", td, err)
			}
		}
	}
	if len(id.TrustDomains) == 0 {
		bad("identity.trust_domains: at least one trust domain is required")
	}
	for _, td := range id.TrustDomains {
		if _, err := spiffeid.TrustDomainFromString(td); err != nil {
			bad("identity.trust_domains: %q: %v", td, err)
		}
	}
	if e := c.Upstreams.Etcd; e != nil {
		if len(e.Endpoints) == 0 {
			bad("upstreams.etcd.endpoints: at least one endpoint is required")
		}
		for _, ep := range e.Endpoints {
			if u, err := url.Parse(ep); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad("upstreams.etcd.endpoints: %q is not an http(s):// URL", ep)
			}
		}
		if (e.TLS.Cert == "") != (e.TLS.Key == "") {
			bad("upstreams.etcd.tls: cert and key go together")
		}
		if e.TLS.SPIFFE != "" && (e.TLS.Cert != "" || e.TLS.CA != "") {
			bad("upstreams.etcd.tls: spiffe replaces cert, key and ca")
		}
		if (e.Username == "") != (e.PasswordFile == "") {
			bad("upstreams.etcd: username and password_file go together")
		}
		if e.MaxTxnOps < 0 {
			bad("upstreams.etcd.max_txn_ops: must not be negative")
		}
	}
	if l := c.Limits; l.StreamsPerCaller < 0 || l.Streams < 0 || l.WatchesPerCaller < 0 || l.Watches < 0 ||
		l.RefusedBytesPerSecond < 0 || l.RefusedBurstBytes < 0 {
		bad("limits: negative bounds are not allowed (0 is the default)")
	}
	if c.Fleet.TTL < Duration(2*time.Second) {
		bad("fleet.ttl: %v is under 2s", time.Duration(c.Fleet.TTL))
	}
	if c.Drain.Timeout < 0 {
		bad("drain.timeout: must not be negative")
	}
	if b := c.Policy.Bundle; b != nil {
		b.validate(bad)
		if c.Policy.Dir != "" {
			bad("policy: set dir or bundle, not both (a replica enforces one policy source)")
		}
	}
	if *c.Policy.CacheSize < 0 {
		bad("policy.cache_size: must not be negative")
	}
	if c.Policy.CacheBytes < 0 || c.Policy.EvalTimeout < 0 {
		bad("policy: cache_bytes and eval_timeout must not be negative")
	}
	// Enums are parsed at decoding; these catch values built in code.
	if m := c.Policy.Mode; m != policy.ModeEnforce && m != policy.ModeShadow {
		bad("policy.mode: %v is not enforce or shadow", m)
	}
	if e := c.Telemetry.Traces.Exporter; e != nil && *e != telemetry.ExporterNone &&
		*e != telemetry.ExporterOTLP && *e != telemetry.ExporterStdout {
		bad("telemetry.traces.exporter: %v is not none, otlp or stdout", *e)
	}
	if r := c.Telemetry.Traces.Sampling; r != nil && !telemetry.ValidSampling(*r) {
		bad("telemetry.traces.sampling: %v is not a ratio in [0, 1]", *r)
	}
	_, perrs := c.PluginSpecs()
	errs = append(errs, perrs...)
	if dl := c.DecisionLog; dl != nil {
		if dl.Output == "" {
			bad("decision_log.output: stdout, stderr or a file path is required")
		}
		if m := dl.OnError; m != decisionlog.ErrorDeny && m != decisionlog.ErrorDrop {
			bad("decision_log.on_error: %v is not deny or drop", m)
		}
		if dl.QueueSize < 0 || dl.QueueBytes < 0 {
			bad("decision_log: queue_size and queue_bytes must not be negative")
		}
		if dl.MaxSizeMB < 0 || dl.MaxBackups < 0 || dl.MaxAgeDays < 0 {
			bad("decision_log: max_size_mb, max_backups and max_age_days must not be negative")
		}
	}
	return errors.Join(errs...)
}

// TelemetryConfig returns the telemetry package's configuration: what the
// file says, for telemetry.Setup to complete from the OTEL_* environment.
func (c *Config) TelemetryConfig(log *slog.Logger) telemetry.Config {
	return telemetry.Config{ServiceName: "storegate", Logger: log, Traces: telemetry.TracesConfig{
		Exporter: c.Telemetry.Traces.Exporter, Sampling: c.Telemetry.Traces.Sampling}}
}

// TrustDomains returns the parsed trust domains (validated already).
func (c *Config) TrustDomains() []spiffeid.TrustDomain {
	out := make([]spiffeid.TrustDomain, 0, len(c.Identity.TrustDomains))
	for _, s := range c.Identity.TrustDomains {
		out = append(out, spiffeid.RequireTrustDomainFromString(s))
	}
	return out
}

// Marshal encodes the configuration as the YAML Parse reads.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return buf.Bytes(), nil
}
