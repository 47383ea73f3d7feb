package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/storegate/storegate/authn"
	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/decisionlog"
	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/plugins"
	"github.com/storegate/storegate/policy"
	consulfront "github.com/storegate/storegate/proxy/consul"
	etcdfront "github.com/storegate/storegate/proxy/etcd"
	"github.com/storegate/storegate/telemetry"
	"github.com/storegate/storegate/throttle"
)

// identitySource is the gateway's own SVID and bundles, closable.
type identitySource interface {
	mtls.Source
	Close() error
}

// serve runs the gateway described by cfg until stop is done (SIGTERM,
// SIGINT), then drains (drain) and returns. ready, if not nil, is called
// once every listener is up.
func serve(stop context.Context, cfg *config.Config, log *slog.Logger, ready func()) error {
	// What runs in the background (the SVID source, policy and plugin
	// reloads, telemetry) keeps running while the gateway drains: it ends
	// when serve returns, not when the signal comes.
	ctx, cancel := context.WithCancel(context.WithoutCancel(stop))
	defer cancel()

	src, err := openIdentity(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer src.Close()

	tc := cfg.TelemetryConfig(log)
	tc.SVIDExpiry = func() (time.Time, bool) {
		svid, err := src.GetX509SVID()
		if err != nil || len(svid.Certificates) == 0 {
			return time.Time{}, false
		}
		return svid.Certificates[0].NotAfter, true
	}
	tel, err := telemetry.Setup(ctx, tc)
	if err != nil {
		return err
	}
	defer func() {
		// Runs last: the spans of the final requests and upstream calls
		// are flushed.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	}()

	mode := cfg.Policy.Mode // parsed by config
	// Open streams are judged again whenever a new policy version is in use.
	var changed atomic.Pointer[gate.Gate]
	pc := policy.Config{Dir: cfg.Policy.Dir, Mode: mode, Logger: log, CacheSize: *cfg.Policy.CacheSize,
		CacheBytes: int64(cfg.Policy.CacheBytes), EvalTimeout: time.Duration(cfg.Policy.EvalTimeout),
		DisableFastPath: cfg.Policy.FastPath != nil && !*cfg.Policy.FastPath,
		OnReload: func(_ string, err error) {
			tel.Metrics().PolicyReloaded(err)
			if g := changed.Load(); g != nil && err == nil {
				g.NotifyPolicyChange()
			}
		}}
	if b := cfg.Policy.Bundle; b != nil {
		pc.Dir = ""
		if pc.Bundle, err = bundleConfig(b, src); err != nil {
			return err
		}
	}
	engine, err := policy.Load(ctx, pc)
	if err != nil {
		return err
	}
	if err := telemetry.RegisterPolicyInfo(tel.MeterProvider(), func() (string, string) {
		st := engine.Status()
		return st.Revision, st.Source
	}); err != nil {
		return err
	}
	go func() {
		if err := engine.Watch(ctx); err != nil && ctx.Err() == nil {
			log.Error("policy watch stopped; policies will not be reloaded", "err", err)
		}
	}()
	observers := gate.Observers{tel.Metrics()}
	if dc := cfg.DecisionLog; dc != nil {
		onError := dc.OnError // parsed by config
		dl, err := decisionlog.Open(decisionlog.Config{Output: dc.Output, MaxSizeMB: dc.MaxSizeMB, MaxBackups: dc.MaxBackups,
			MaxAgeDays: dc.MaxAgeDays, Compress: dc.Compress,
			ErrorMode: onError, QueueSize: dc.QueueSize, QueueBytes: int(dc.QueueBytes),
			OnError: func(err error) { log.Error("decision log: a line was not written", "err", err) }})
		if err != nil {
			return fmt.Errorf("decision_log: %w", err)
		}
		defer dl.Close()
		observers = append(observers, dl)
	}
	gopts := []gate.Option{gate.WithTracer(tel.Tracer()), gate.WithObserver(observers),
		gate.WithReserved([]byte(etcdfront.ReservedPrefix))}
	host, err := loadPlugins(ctx, cfg, tel.Metrics(), tel.Tracer(), log)
	if err != nil {
		return err
	}
	if host != nil {
		defer host.Close(context.Background())
		// Each plugin's failure series start at 0, so that an alert on
		// their increase sees the first failure.
		names := make([]string, 0, len(cfg.Plugins))
		for _, p := range cfg.Plugins {
			names = append(names, p.Name)
		}
		tel.Metrics().InitPlugins(names, plugins.FailureKindNames())
		go func() {
			if err := host.Watch(ctx); err != nil && ctx.Err() == nil {
				log.Error("plugin watch stopped; plugins will not be reloaded", "err", err)
			}
		}()
		gopts = append(gopts, gate.WithPlugins(host))
	}
	g := gate.New(engine, log, gopts...)
	changed.Store(g)

	tds := cfg.TrustDomains()
	// One ledger for both fronts: a refusal costs the gateway's CPU
	// whichever front it came through.
	debts := throttle.New(int64(cfg.Limits.RefusedBytesPerSecond), int64(cfg.Limits.RefusedBurstBytes))
	adminLis, err := net.Listen("tcp", cfg.Listen.Admin)
	if err != nil {
		return fmt.Errorf("listen.admin: %w", err)
	}
	defer adminLis.Close()
	checks := readiness{src: src, draining: new(atomic.Bool), policy: engine}

	// The etcd front, when configured.
	var gs *grpc.Server
	var etcdLis net.Listener
	var etcdFront *etcdfront.Server
	if cfg.Upstreams.Etcd != nil {
		up, err := dialEtcd(cfg.Upstreams.Etcd, src, tel.DialOptions(), log)
		if err != nil {
			return err
		}
		defer up.Close()
		front := etcdfront.New(g, up, authn.New(tds), etcdfront.Options{
			AdvertiseURLs:   cfg.Listen.EtcdAdvertise,
			FleetTTL:        time.Duration(cfg.Fleet.TTL),
			MaxRequestBytes: int(cfg.Upstreams.Etcd.MaxRequest),
			MaxTxnOps:       cfg.Upstreams.Etcd.MaxTxnOps,
			Limits: etcdfront.Limits{StreamsPerCaller: cfg.Limits.StreamsPerCaller, Streams: cfg.Limits.Streams,
				WatchesPerCaller: cfg.Limits.WatchesPerCaller, Watches: cfg.Limits.Watches},
			Throttle: debts,
			Logger:   log,
		})
		etcdFront = front
		gs = front.GRPCServer(credentials.NewTLS(mtls.ServerConfig(src, tds, log)), tel.ServerOptions()...)
		if etcdLis, err = net.Listen("tcp", cfg.Listen.Etcd); err != nil {
			return fmt.Errorf("listen.etcd: %w", err)
		}
		defer etcdLis.Close()
		checks.etcd = up
	}
	consulSrv, consulLis, consul, err := consulFront(cfg, g, authn.New(tds), debts, src, tel, log)
	if err != nil {
		return err
	}
	if consul != nil {
		checks.consul = consul
	}
	stat := statusSource{engine: engine, svid: src, svidFrom: "workload_api", ready: checks}
	if cfg.Identity.Files != nil {
		stat.svidFrom = "files"
	}
	if host != nil {
		stat.plugins = host
	}
	if cfg.Upstreams.Etcd != nil {
		stat.etcd = cfg.Upstreams.Etcd.Endpoints
	}
	if cfg.Upstreams.Consul != nil {
		stat.consulURL = cfg.Upstreams.Consul.Address
	}
	admin := &http.Server{Handler: adminMux(checks, stat, tel.MetricsHandler(), cfg.Debug.Pprof), ReadHeaderTimeout: 10 * time.Second}
	stopHUP := reloadOnHUP(ctx, engine, host, src, log)
	defer stopHUP()

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(1)
	go func() { defer wg.Done(); errc <- admin.Serve(adminLis) }()
	if gs != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- gs.Serve(etcdLis) }()
		log.Info("etcd front serving", "etcd", etcdLis.Addr().String(), "upstream", strings.Join(cfg.Upstreams.Etcd.Endpoints, ","))
	}
	if consulSrv != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- consulSrv.ServeTLS(consulLis, "", "") }()
		log.Info("consul front serving", "consul", consulLis.Addr().String(), "upstream", cfg.Upstreams.Consul.Address)
	}
	log.Info("storegate serving", "fronts", cfg.Fronts(), "admin", adminLis.Addr().String(),
		"policy", engine.Status().Source, "mode", cfg.Policy.Mode, "traces", tel.Traces())
	if ready != nil {
		ready()
	}

	select {
	case <-stop.Done():
	case err = <-errc:
	}
	d := drain{timeout: time.Duration(cfg.Drain.Timeout), draining: checks.draining, log: log,
		gs: gs, consulSrv: consulSrv}
	if etcdFront != nil {
		d.etcd = etcdFront
	}
	if consul != nil {
		d.consul = consul
	}
	d.run()
	// The admin listener goes last: /readyz answered 503 throughout. It is
	// closed, not shut down: health checks arrive every few hundred
	// milliseconds, and Shutdown would wait for the one in progress.
	_ = admin.Close()
	wg.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// consulFront builds the Consul front's HTTPS server and listener, or
// nothing when no Consul front is configured.
func consulFront(cfg *config.Config, g *gate.Gate, auth consulfront.Authenticator, debts *throttle.Debts, src mtls.Source, tel *telemetry.Telemetry, log *slog.Logger) (*http.Server, net.Listener, *consulfront.Server, error) {
	cu := cfg.Upstreams.Consul
	if cu == nil {
		return nil, nil, nil, nil
	}
	addr, err := url.Parse(cu.Address)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("upstreams.consul.address: %w", err)
	}
	opts := consulfront.Options{Upstream: addr, MaxValueBytes: int64(cu.MaxValueBytes), Logger: log,
		ForwardCallerTokens: cu.ForwardCallerTokens, Throttle: debts, Guarded: guarded(cfg),
		RequestTimeout: time.Duration(cu.RequestTimeout), UpstreamSocket: cu.Socket,
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper { return tel.HTTPTransport(rt, gate.ProtocolConsul) }}
	if cu.TokenFile != "" {
		b, err := os.ReadFile(cu.TokenFile)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("upstreams.consul.token_file: %w", err)
		}
		opts.Token = strings.TrimSpace(string(b))
	}
	if addr.Scheme == "https" {
		c, err := upstreamTLS(cu.TLS, src)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("upstreams.consul.tls: %w", err)
		}
		opts.UpstreamTLS = c
	}
	front, err := consulfront.New(g, auth, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	lis, err := net.Listen("tcp", cfg.Listen.Consul)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listen.consul: %w", err)
	}
	srv := &http.Server{
		Handler:           tel.HTTPHandler(front.Handler(), gate.ProtocolConsul),
		TLSConfig:         mtls.ServerConfig(src, cfg.TrustDomains(), log),
		ReadHeaderTimeout: 10 * time.Second,
		// No write timeout: blocking queries are held up to ~10m40s.
		IdleTimeout: 5 * time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return srv, lis, front, nil
}

// guarded are the addresses no Consul health check may reach unless an
// intention names them: the stores' (the agent's own ports the front reads
// from the agent) and every listener of the gateway's.
func guarded(cfg *config.Config) []consulfront.Guarded {
	var out []consulfront.Guarded
	if e := cfg.Upstreams.Etcd; e != nil {
		for _, ep := range e.Endpoints {
			if u, err := url.Parse(ep); err == nil && u.Host != "" {
				out = append(out, consulfront.Guarded{Addr: consulfront.HostPort(u), What: "etcd"})
			}
		}
	}
	if u, err := url.Parse(cfg.Upstreams.Consul.Address); err == nil && u.Host != "" {
		out = append(out, consulfront.Guarded{Addr: consulfront.HostPort(u), What: "consul"})
	}
	for _, l := range []string{cfg.Listen.Etcd, cfg.Listen.Consul, cfg.Listen.Admin} {
		if l != "" {
			out = append(out, consulfront.Guarded{Addr: l, What: "gateway"})
		}
	}
	return out
}

func openIdentity(ctx context.Context, cfg *config.Config, log *slog.Logger) (identitySource, error) {
	if f := cfg.Identity.Files; f != nil {
		fed := map[spiffeid.TrustDomain]string{}
		for td, p := range f.Federated {
			fed[spiffeid.RequireTrustDomainFromString(td)] = p
		}
		src, err := mtls.NewFileSource(ctx, mtls.FileConfig{Cert: f.Cert, Key: f.Key, Bundle: f.Bundle, Federated: fed}, log)
		if err != nil {
			return nil, err
		}
		return src, nil
	}
	src, err := mtls.StartWorkloadSource(ctx, cfg.Identity.WorkloadAPI, log)
	if err != nil {
		return nil, err
	}
	return src, nil
}

// upstreamTLS is the client TLS config for an upstream: the gateway's own
// SVID when tls.spiffe names the upstream, else the files.
func upstreamTLS(t config.TLSFiles, src mtls.Source) (*tls.Config, error) {
	if t.SPIFFE != "" {
		return mtls.SourceClientConfig(src, t.SPIFFE)
	}
	return mtls.FileClientConfig(mtls.ClientFiles{Cert: t.Cert, Key: t.Key, CA: t.CA, ServerName: t.ServerName})
}

func dialEtcd(e *config.EtcdUpstream, src mtls.Source, dialOpts []grpc.DialOption, log *slog.Logger) (*etcdfront.Upstream, error) {
	var tlsCfg *tls.Config
	for _, ep := range e.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			c, err := upstreamTLS(e.TLS, src)
			if err != nil {
				return nil, fmt.Errorf("upstreams.etcd.tls: %w", err)
			}
			tlsCfg = c
			break
		}
	}
	var password string
	if e.PasswordFile != "" {
		b, err := os.ReadFile(e.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("upstreams.etcd.password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	return etcdfront.Dial(etcdfront.UpstreamConfig{
		Endpoints: e.Endpoints, TLS: tlsCfg, Username: e.Username, Password: password,
		DialTimeout: time.Duration(e.DialTimeout), RequestTimeout: time.Duration(e.RequestTimeout), DialOptions: dialOpts, Logger: log,
	})
}

// readiness is what /readyz checks: the gateway is not draining, a policy
// is active, its SVID is valid and every upstream answers. A policy
// directory is active from the start (a failed reload keeps the last good
// version, and a missing directory is a policy that denies everything:
// one bad push must not take every replica out at once); a bundle is once
// a verified one (persisted or fetched) is loaded.
type readiness struct {
	// draining is set when the gateway begins to stop: /readyz answers
	// 503 at once, so that balancers take the replica out.
	draining *atomic.Bool
	policy   interface {
		Active() bool
		Status() policy.Status
	}
	src    mtls.Source
	etcd   interface{ Ready(context.Context) error } // nil: no etcd front
	consul interface{ Ready(context.Context) error } // nil: no Consul front
}

func (c readiness) problems(ctx context.Context) []string {
	if c.draining != nil && c.draining.Load() {
		return []string{"draining: the gateway is stopping"}
	}
	var problems []string
	if c.policy != nil && !c.policy.Active() {
		st := c.policy.Status()
		p := "policy: no policy loaded yet from " + st.Source + ": every request is denied"
		if st.LastError != "" {
			p += " (" + st.LastError + ")"
		}
		problems = append(problems, p)
	}
	if svid, err := c.src.GetX509SVID(); err != nil {
		problems = append(problems, "svid: "+err.Error())
	} else if time.Now().After(svid.Certificates[0].NotAfter) {
		problems = append(problems, "svid: expired")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if c.etcd != nil {
		if err := c.etcd.Ready(ctx); err != nil {
			problems = append(problems, "upstream etcd: "+err.Error())
		}
	}
	if c.consul != nil {
		if err := c.consul.Ready(ctx); err != nil {
			problems = append(problems, "upstream consul: "+err.Error())
		}
	}
	return problems
}

// adminMux serves /healthz (the process is up, draining or not), /readyz
// (not draining, a policy active, the SVID valid and the upstreams
// answering), /status (statusSource) and /metrics.
func adminMux(ready readiness, status http.Handler, metrics http.Handler, profiles bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.Handle("GET /status", status)
	if profiles {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if problems := ready.problems(r.Context()); len(problems) > 0 {
			http.Error(w, strings.Join(problems, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// drain is a graceful stop, bounded by timeout as a whole:
//
//  1. /readyz answers 503 and the replica leaves the fleet registry, so
//     that balancers and other replicas' MemberList stop sending callers
//     here; the Consul front stops keeping connections alive.
//  2. For readinessGrace the gateway serves on as before, long enough for
//     a balancer's health check to notice.
//  3. The listeners close and gRPC connections are told to go away
//     (GOAWAY, GracefulStop): unary RPCs in flight finish and their
//     answers are sent; streams end with etcd's "server stopped"
//     (Unavailable), which client/v3 retries on another connection
//     (proxy/etcd drain.go). The Consul front answers its blocking
//     queries as if their wait had run out (proxy/consul drain.go) and
//     waits for its other requests (http.Server.Shutdown).
//  4. Whatever is still open when timeout has passed is closed.
type drain struct {
	timeout  time.Duration
	draining *atomic.Bool
	log      *slog.Logger
	gs       *grpc.Server // nil: no etcd front
	etcd     interface {
		Deregister(context.Context) error
		Drain()
	}
	consulSrv *http.Server // nil: no Consul front
	consul    interface{ Drain() }
}

// readinessGrace is how long a draining gateway serves on with /readyz at
// 503 before its listeners close: a third of the drain timeout, at most
// 1 s. That covers a health check that polls /readyz a few times a second
// (HAProxy's inter 250ms fall 2 takes ≤ 750 ms to mark the server down).
// A slower check loses nothing either: a connection the closed listener
// refuses is sent to another server (HAProxy's `retries` with
// `option redispatch`), and open gRPC connections are told to go away.
// Kubernetes removes a terminating pod's endpoints as it sends SIGTERM,
// but kube-proxy and ingresses take seconds to follow; a longer wait there
// belongs in the pod's preStop hook, before the signal, so that every
// other stop of the gateway stays quick. No setting of its own: the drain
// timeout bounds the whole stop.
func readinessGrace(timeout time.Duration) time.Duration {
	return min(timeout/3, time.Second)
}

// run drains, returning once everything has stopped or been closed.
func (d drain) run() {
	if d.timeout <= 0 {
		d.timeout = 15 * time.Second // config.Defaults' (a configuration not defaulted)
	}
	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(d.timeout))
	defer cancel()
	d.draining.Store(true)
	d.log.Info("draining", "timeout", d.timeout, "readiness_grace", readinessGrace(d.timeout))
	if d.consulSrv != nil {
		d.consulSrv.SetKeepAlivesEnabled(false)
	}
	if d.etcd != nil {
		if err := d.etcd.Deregister(ctx); err != nil {
			d.log.Warn("drain: leaving the fleet registry", "err", err)
		}
	}
	grace := time.NewTimer(time.Until(start.Add(readinessGrace(d.timeout))))
	select {
	case <-grace.C:
	case <-ctx.Done():
	}
	var wg sync.WaitGroup
	if d.gs != nil {
		wg.Go(func() {
			stopped := make(chan struct{})
			go func() { d.gs.GracefulStop(); close(stopped) }()
			d.etcd.Drain()
			select {
			case <-stopped:
			case <-ctx.Done():
				d.log.Warn("drain: etcd front still busy at the drain timeout; closing its connections")
				d.gs.Stop()
				<-stopped
			}
		})
	}
	if d.consulSrv != nil {
		wg.Go(func() {
			d.consul.Drain()
			if err := d.consulSrv.Shutdown(ctx); err != nil {
				d.log.Warn("drain: Consul front still busy at the drain timeout; closing its connections", "err", err)
				_ = d.consulSrv.Close()
			}
		})
	}
	wg.Wait()
	d.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
}

// bundleConfig is the policy package's bundle configuration: the key read,
// the bundle server's TLS built (the gateway's own SVID when tls.spiffe
// names the server), the persist directory defaulted.
func bundleConfig(b *config.BundleConfig, src mtls.Source) (*policy.BundleConfig, error) {
	key, err := os.ReadFile(b.Verification.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("policy.bundle.verification.public_key: %w", err)
	}
	pb := &policy.BundleConfig{URL: b.URL, PublicKey: string(key), KeyID: b.Verification.KeyID,
		Algorithm: b.Verification.Algorithm, Scope: b.Verification.Scope,
		MinDelay: time.Duration(b.Polling.MinDelay), MaxDelay: time.Duration(b.Polling.MaxDelay),
		Timeout: time.Duration(b.Timeout), SizeLimit: int64(b.SizeLimit), PersistDir: bundlePersistDir(b)}
	if t := b.TLS; t != (config.TLSFiles{}) {
		if pb.TLS, err = upstreamTLS(t, src); err != nil {
			return nil, fmt.Errorf("policy.bundle.tls: %w", err)
		}
	}
	return pb, nil
}

// bundlePersistDir is where the last good bundle is kept: the configured
// directory, none, or by default one for this bundle URL under the user's
// cache directory (as compiled plugins are: the configuration's directory
// is read-only where it is a Kubernetes ConfigMap).
func bundlePersistDir(b *config.BundleConfig) string {
	switch b.PersistDir {
	case "none":
		return ""
	case "":
		if d, err := os.UserCacheDir(); err == nil {
			return policy.DefaultPersistDir(filepath.Join(d, "storegate"), b.URL)
		}
		return ""
	}
	return b.PersistDir
}

// reloader is what SIGHUP reloads.
type reloader interface {
	Reload(context.Context) error
}

// reloadOnHUP reloads the policy (the directory read again, or the bundle
// fetched now), the plugins and the identity files, together, on every
// SIGHUP until ctx is done or the returned func is called: for mounts where
// file events do not arrive (a directory behind a swapped symlink, network
// file systems). Each logs its own failures and keeps what it had.
func reloadOnHUP(ctx context.Context, engine reloader, host *plugins.Host, src identitySource, log *slog.Logger) func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	targets := map[string]reloader{"policy": engine}
	if host != nil {
		targets["plugins"] = host
	}
	if fs, ok := src.(reloader); ok { // identity files; the Workload API streams its updates
		targets["identity"] = fs
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			log.Info("SIGHUP: reloading policy, plugins and identity files")
			var wg sync.WaitGroup
			for name, r := range targets {
				wg.Go(func() {
					if err := r.Reload(ctx); err != nil {
						log.Warn("SIGHUP: reload failed, keeping the last good version", "what", name, "err", err)
					}
				})
			}
			wg.Wait()
			log.Info("SIGHUP: reloaded")
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}
