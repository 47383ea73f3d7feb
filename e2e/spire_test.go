package e2e

// The gateway, its callers and a real SPIRE deployment (internal/spiretest):
// every identity here comes from a SPIRE agent's Workload API. The gateway is
// told apart from the callers by the path of its binary (tests run as root);
// etcdctl gets its files from `spire-agent api fetch x509` and the test
// process itself is a workload using go-spiffe. The upstream etcd keeps the
// harness's dev-CA files.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/spiretest"
	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
)

// ---- helpers ----------------------------------------------------------------

// spireGatewayOpts configure startSPIREGateway.
type spireGatewayOpts struct {
	workloadAPI  string   // identity.workload_api (unix:///…)
	trustDomains []string // identity.trust_domains; default [example.org]
	policyDir    string   // default: allowAll
	// consulListen and consulUpstream add the Consul front.
	consulListen, consulUpstream string
	decisionLog                  *config.DecisionLogConfig
	// notReady: return as soon as the admin listener answers, ready or not.
	notReady bool
}

// startSPIREGateway runs the gateway binary with its identity from the
// Workload API (identity.workload_api instead of the harness's files) and
// the harness's dev-CA files for the upstream etcd. When the test ends the
// gateway must stop cleanly on SIGINT, with no data race or panic.
func startSPIREGateway(t *testing.T, p *pki, ec *etcdCluster, o spireGatewayOpts) *gateway {
	t.Helper()
	if len(o.trustDomains) == 0 {
		o.trustDomains = []string{"example.org"}
	}
	cfg := gatewayOpts{policyDir: o.policyDir, consulListen: o.consulListen, consulUpstream: o.consulUpstream,
		decisionLog: o.decisionLog}.config(t, p, ec)
	cfg.Identity = config.IdentityConfig{WorkloadAPI: o.workloadAPI, TrustDomains: o.trustDomains}
	env := testenv.New(t)
	spec := testenv.GatewaySpec{Bin: gatewayBin, Config: cfg}
	var g *gateway
	if o.notReady {
		g = asGateway(env.LaunchGateway(spec))
		env.Eventually(3*time.Minute, func(ctx context.Context) error {
			if gone, err := g.Proc.Exited(); gone {
				return testenv.Permanent(g.Proc.Failure(fmt.Errorf("exited before its admin listener answered: %v", err)))
			}
			_, err := readyzCode(ctx, g) // any answer: ready or not
			return err
		})
	} else {
		g = asGateway(env.Gateway(spec))
	}
	// Registered after testenv's stop, so run before it.
	t.Cleanup(func() {
		_ = g.Proc.Signal(syscall.SIGINT)
		if !g.Proc.Wait(15 * time.Second) {
			g.Proc.Kill()
			t.Errorf("the gateway at %s did not stop within 15s of SIGINT; killed", g.addr)
		} else if err := g.Proc.ExitErr(); err != nil {
			// A clean stop, and no data race (a -race build exits 66) or
			// panic on the way.
			t.Errorf("the gateway at %s exited with %v after SIGINT, want status 0", g.addr, err)
		}
		if logs := g.logs.String(); strings.Contains(logs, "WARNING: DATA RACE") || strings.Contains(logs, "panic:") {
			t.Errorf("the gateway at %s reported a data race or a panic", g.addr)
		}
	})
	return g
}

// readyzCode is the status /readyz answers.
func readyzCode(ctx context.Context, g *gateway) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.admin+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// spireSelf is the unix:path selector of this test binary.
func spireSelf(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return spiretest.PathSelector(exe)
}

// spireSource is this process's X.509 source from the agent at socket.
func spireSource(t *testing.T, socket string) *workloadapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(socket)))
	if err != nil {
		t.Fatalf("no X.509-SVID for the test process from %s: %v", socket, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// spireTLS is a client config presenting src's current SVID on every
// handshake and accepting only the server gw, verified with src's bundles.
func spireTLS(src *workloadapi.X509Source, gw spiffeid.ID) *tls.Config {
	return tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(gw))
}

// newSPIREEtcd is an etcd client of endpoint with cfg; dials counts its TCP
// connections (one, as long as its connection is never re-established).
func newSPIREEtcd(endpoint string, cfg *tls.Config) (*clientv3.Client, *atomic.Int64, error) {
	dials := &atomic.Int64{}
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		TLS:         cfg,
		DialTimeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialer)},
		Logger:      zap.NewNop(),
	})
	return cli, dials, err
}

// spireEtcd is newSPIREEtcd, closed when the test ends.
func spireEtcd(t *testing.T, endpoint string, cfg *tls.Config) (*clientv3.Client, *atomic.Int64) {
	t.Helper()
	cli, dials, err := newSPIREEtcd(endpoint, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, dials
}

// served handshakes with addr and returns the certificate the server
// presented (a full handshake: the config has no session cache).
func served(cfg *tls.Config, addr string) (*x509.Certificate, error) {
	c := cfg.Clone()
	c.NextProtos = []string{"h2"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// handshakeErr completes a handshake with addr and reads from it: nil if the
// server took the client (a gRPC server then sends its settings), else the
// error, e.g. the server's bad_certificate alert (with TLS 1.3 the client
// learns of its refusal only when it reads).
func handshakeErr(cfg *tls.Config, addr string) error {
	c := cfg.Clone()
	c.NextProtos = []string{"h2"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	return err
}

// spireCtl fetches an SVID with `spire-agent api fetch x509` (the workload
// of s.FetchSelector()) and returns an etcdctl runner presenting it as who,
// verifying the gateway at endpoint with the trust domain's bundle.
func spireCtl(t *testing.T, s *spiretest.SPIRE, who, endpoint string) ctl {
	t.Helper()
	dir := t.TempDir()
	f := s.FetchX509(t, dir)
	for from, to := range map[string]string{f.Cert: who + ".pem", f.Key: who + "-key.pem", f.Bundle: mtls.BundleFile} {
		if err := os.Rename(from, filepath.Join(dir, to)); err != nil {
			t.Fatal(err)
		}
	}
	return ctl{p: &pki{PKI: &testenv.PKI{Dir: dir}, dir: dir}, endpoint: endpoint, who: who}
}

// localhostURL is the https URL of addr by the name "localhost": SPIRE
// SVIDs carry DNS names only, and etcdctl checks the server's name.
func localhostURL(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return "https://localhost:" + port
}

func readyz(t *testing.T, gw *gateway) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + gw.admin + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logLine waits for a gateway log line holding every one of parts.
func logLine(t *testing.T, gw *gateway, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, l := range strings.Split(gw.logs.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway logged no line with all of %q", parts)
		}
		time.Sleep(50 * time.Millisecond) // polling the log, bounded by the deadline
	}
}

func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 15*time.Second)
}

// ---- tests ------------------------------------------------------------------

const spireIdentitiesPolicy = `intentions:
  - name: admin-all
    source: "spiffe://example.org/admin"
    resources: ["*"]
    actions: ["*"]
    effect: allow
  - name: web-app
    source: "spiffe://example.org/web"
    resources: [kv, watch]
    actions: [read, write, delete, watch]
    keys: ["/app/**"]
    effect: allow
`

// TestSPIREIdentities: the gateway and two callers take their SVIDs from a
// SPIRE agent; etcdctl (web, files from `spire-agent api fetch x509`) and
// consul/api (admin, this process through go-spiffe) are authorized by those
// SPIFFE IDs.
func TestSPIREIdentities(t *testing.T) {
	p := newPKI(t)
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	s := spiretest.Start(t, spiretest.Options{})
	gwID, web, admin := s.ID("/storegate"), s.ID("/web"), s.ID("/admin")
	s.Register(t, gwID.String(), []string{spiretest.PathSelector(gatewayBin)}, []string{"localhost"})
	s.Register(t, web.String(), []string{s.FetchSelector()}, nil)
	s.Register(t, admin.String(), []string{spireSelf(t)}, nil)

	dlog := filepath.Join(t.TempDir(), "decisions.log")
	front := freePort(t)
	gw := startSPIREGateway(t, p, ec, spireGatewayOpts{workloadAPI: s.SocketPath,
		policyDir: copyPolicies(t, spireIdentitiesPolicy), consulListen: front, consulUpstream: "http://" + agent.httpAddr,
		decisionLog: &config.DecisionLogConfig{Output: dlog}})

	// The gateway presents its SPIRE SVID (verified against SPIRE's bundle,
	// not the dev CA's) on both fronts.
	src := spireSource(t, s.SocketPath)
	if svid, err := src.GetX509SVID(); err != nil || svid.ID != admin {
		t.Fatalf("the test process's SVID: %v, %v; want %s", svid, err, admin)
	}
	cfg := spireTLS(src, gwID)
	for _, addr := range []string{gw.addr, front} {
		cert, err := served(cfg, addr)
		if err != nil {
			t.Fatalf("handshake with the gateway at %s verifying it as %s with SPIRE's bundle: %v", addr, gwID, err)
		}
		if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "localhost" {
			t.Errorf("the gateway's SVID at %s has DNS names %v, want [localhost] (from its registration)", addr, cert.DNSNames)
		}
	}

	// etcdctl as web: /app/** only.
	c := spireCtl(t, s, "web", localhostURL(t, gw.addr))
	if out := mustRun(t, c, "", "put", "/app/x", "from-web"); out != "OK\n" {
		t.Fatalf("etcdctl put /app/x as %s: %q, want OK", web, out)
	}
	if out := mustRun(t, c, "", "get", "/app/x", "--print-value-only"); out != "from-web\n" {
		t.Errorf("etcdctl get /app/x as %s: %q, want from-web", web, out)
	}
	if out, stderr, err := c.run(t, "", "put", "/other", "from-web"); err == nil || !strings.Contains(stderr, "permission denied") {
		t.Errorf("etcdctl put /other as %s: err=%v stdout=%q stderr=%q; want permission denied", web, err, out, stderr)
	}
	line := logLine(t, gw, "msg=deny", "caller="+web.String(), `/other`)
	t.Logf("deny line: %s", line)

	// consul/api as admin (this process), through go-spiffe.
	capi, err := consulapi.NewClient(&consulapi.Config{Address: front, Scheme: "https",
		HttpClient: &http.Client{Transport: &http.Transport{TLSClientConfig: spireTLS(src, gwID)}, Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := capi.KV().Put(&consulapi.KVPair{Key: "admin/cfg", Value: []byte("from-admin")}, nil); err != nil {
		t.Fatalf("consul/api KV put admin/cfg as %s through the gateway: %v", admin, err)
	}
	pair, _, err := capi.KV().Get("admin/cfg", nil)
	if err != nil || pair == nil || string(pair.Value) != "from-admin" {
		t.Fatalf("consul/api KV get admin/cfg as %s through the gateway: %v, %v", admin, pair, err)
	}
	direct, err := consulapi.NewClient(&consulapi.Config{Address: agent.httpAddr, Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	if pair, _, err := direct.KV().Get("admin/cfg", nil); err != nil || pair == nil || string(pair.Value) != "from-admin" {
		t.Errorf("the Consul agent itself has admin/cfg = %v (%v), want from-admin", pair, err)
	}

	// The decisions name the callers by their SPIRE SPIFFE IDs.
	type dec struct{ protocol, key, caller, result string }
	wants := []dec{
		{"etcd", "/app/x", web.String(), "allow"},
		{"etcd", "/other", web.String(), "deny"},
		{"consul", "/admin/cfg", admin.String(), "allow"},
	}
	var lines []map[string]any
	eventually(t, "the decision lines", func() bool {
		lines = decisionLines(t, dlog)
		for _, w := range wants {
			found := false
			for _, l := range lines {
				found = found || l["protocol"] == w.protocol && l["key"] == w.key && l["caller"] == w.caller && l["result"] == w.result
			}
			if !found {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("want %v in the decision log, have:\n%v", wants, lines) })
	for _, l := range lines {
		if c, _ := l["caller"].(string); c != web.String() && c != admin.String() {
			t.Errorf("decision for an unexpected caller %q: %v", c, l)
		}
	}
}

// rotationObs is one look at the certificate the gateway presents.
type rotationObs struct {
	at       time.Time
	serial   string
	ca       string // AuthorityKeyId, hex
	notAfter time.Time
}

// TestSPIRERotation: with a one-minute CA (30s SVIDs) the gateway's SVID
// and its CA rotate several times while this process (a workload too, its
// own SVID rotating as well) keeps a load of etcd requests on one long-lived
// connection and on fresh ones, and keeps a watch open: no request fails,
// established connections are never re-dialed, and the watch delivers every
// put, those after the last rotation included.
func TestSPIRERotation(t *testing.T) {
	p := newPKI(t)
	ec := startEtcd(t, p, 1)
	s := spiretest.Start(t, spiretest.Options{CATTL: time.Minute})
	spireStart := time.Now()
	gwID, self := s.ID("/storegate"), s.ID("/loader")
	s.Register(t, gwID.String(), []string{spiretest.PathSelector(gatewayBin)}, []string{"localhost"})
	s.Register(t, self.String(), []string{spireSelf(t)}, nil)
	gw := startSPIREGateway(t, p, ec, spireGatewayOpts{workloadAPI: s.SocketPath})
	src := spireSource(t, s.SocketPath)
	cfg := spireTLS(src, gwID)
	endpoint := "https://" + gw.addr

	var (
		mu        sync.Mutex
		failures  []string
		requests  int
		putAt     = map[string]time.Time{} // key -> when its put succeeded
		seen      = map[string]time.Time{} // key -> when the watch delivered it
		watchErrs []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	}
	put := func(cli *clientv3.Client, key string) bool {
		ctx, cancel := opCtx()
		defer cancel()
		_, err := cli.Put(ctx, key, key)
		mu.Lock()
		requests++
		if err == nil {
			putAt[key] = time.Now()
		}
		mu.Unlock()
		if err != nil {
			fail("put %s: %v", key, err)
		}
		return err == nil
	}
	get := func(cli *clientv3.Client, key string) {
		ctx, cancel := opCtx()
		defer cancel()
		resp, err := cli.Get(ctx, key)
		mu.Lock()
		requests++
		mu.Unlock()
		switch {
		case err != nil:
			fail("get %s: %v", key, err)
		case len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != key:
			fail("get %s: %v", key, resp.Kvs)
		}
	}

	// The watch, on a connection of its own, opened before any rotation.
	wcli, wdials := spireEtcd(t, endpoint, cfg)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	wch := wcli.Watch(wctx, "/rot/", clientv3.WithPrefix())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for wr := range wch {
			mu.Lock()
			if err := wr.Err(); err != nil {
				watchErrs = append(watchErrs, time.Now().Format("15:04:05.000")+" "+err.Error())
			}
			for _, ev := range wr.Events {
				seen[string(ev.Kv.Key)] = time.Now()
			}
			mu.Unlock()
		}
		if wctx.Err() == nil {
			mu.Lock()
			watchErrs = append(watchErrs, time.Now().Format("15:04:05.000")+" the watch channel closed")
			mu.Unlock()
		}
	}()
	lcli, ldials := spireEtcd(t, endpoint, cfg)
	if !put(lcli, "/rot/start") {
		t.Fatalf("first put: %v", failures)
	}
	eventually(t, "the watch to deliver /rot/start", func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := seen["/rot/start"]
		return ok
	}, func() string { return fmt.Sprint(watchErrs) })

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	loadStart := time.Now()
	var wg sync.WaitGroup
	// Load on the long-lived connection: a put every 50ms, every other one
	// read back.
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			key := fmt.Sprintf("/rot/l/%06d", i)
			if put(lcli, key) && i%2 == 0 {
				get(lcli, key)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	// A fresh client (a new connection, so a new handshake with the current
	// SVIDs on both sides) every two seconds.
	var fresh atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for i := 0; ; i++ {
			cli, dials, err := newSPIREEtcd(endpoint, cfg)
			if err != nil {
				fail("fresh client %d: %v", i, err)
				return
			}
			key := fmt.Sprintf("/rot/f/%04d", i)
			if put(cli, key) {
				get(cli, key)
			}
			cli.Close()
			fresh.Add(1)
			if n := dials.Load(); n != 1 {
				fail("fresh client %d dialed %d times (a handshake failed and was retried?)", i, n)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	// Watch what the gateway presents on new handshakes, once a second,
	// until its CA has changed twice and it has presented a newer SVID
	// since, a few seconds ago.
	var obs []rotationObs
	svidChanges, caChanges := 0, 0
	var lastSVIDChange, lastCAChange time.Time
	hardDeadline := spireStart.Add(170 * time.Second)
	for {
		cert, err := served(cfg, gw.addr)
		mu.Lock()
		requests++
		mu.Unlock()
		if err != nil {
			fail("handshake to read the gateway's SVID: %v", err)
		} else {
			o := rotationObs{at: time.Now(), serial: cert.SerialNumber.String(), ca: hex.EncodeToString(cert.AuthorityKeyId), notAfter: cert.NotAfter}
			if n := len(obs); n == 0 || obs[n-1].serial != o.serial {
				if n > 0 {
					svidChanges++
					lastSVIDChange = o.at
					if obs[n-1].ca != o.ca {
						caChanges++
						lastCAChange = o.at
					}
				}
				obs = append(obs, o)
			}
		}
		if caChanges >= 2 && svidChanges >= 3 && lastSVIDChange.After(lastCAChange) && time.Since(lastSVIDChange) >= 3*time.Second {
			break
		}
		if time.Now().After(hardDeadline) {
			stop()
			wg.Wait()
			t.Fatalf("in %v after SPIRE started, the gateway's SVID changed %d times and its CA %d times; want at least 3 and 2 (ca_ttl 1m). Observed:\n%s",
				time.Since(spireStart).Round(time.Second), svidChanges, caChanges, describeObs(obs, spireStart))
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
	stop()
	wg.Wait()
	loadEnd := time.Now()

	// Every put reaches the watch, the ones after the last rotation too.
	eventually(t, "the watch to deliver every put", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for k := range putAt {
			if _, ok := seen[k]; !ok {
				return false
			}
		}
		return true
	}, func() string {
		mu.Lock()
		defer mu.Unlock()
		var missing []string
		for k, at := range putAt {
			if _, ok := seen[k]; !ok {
				missing = append(missing, k+" (put "+at.Format("15:04:05.000")+")")
			}
		}
		return fmt.Sprintf("%d of %d puts not delivered: %v\nwatch errors: %v", len(missing), len(putAt), missing, watchErrs)
	})
	wcancel()
	<-watchDone

	mu.Lock()
	defer mu.Unlock()
	afterLast := 0
	for _, at := range putAt {
		if at.After(lastSVIDChange) {
			afterLast++
		}
	}
	t.Logf("%v of load (SPIRE started %v before its end): %d requests and handshakes, %d puts (%d after the last observed rotation), %d fresh clients; the gateway presented %d SVIDs (%d changes, %d of CA):\n%s",
		loadEnd.Sub(loadStart).Round(time.Second), loadEnd.Sub(spireStart).Round(time.Second), requests, len(putAt), afterLast,
		fresh.Load(), len(obs), svidChanges, caChanges, describeObs(obs, spireStart))
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed across the rotations; the first ones:\n%s", len(failures), requests, strings.Join(failures[:min(len(failures), 20)], "\n"))
	}
	if len(watchErrs) > 0 {
		t.Errorf("the watch reported errors across the rotations: %v", watchErrs)
	}
	if afterLast == 0 {
		t.Errorf("no put succeeded after the last observed rotation at %s", lastSVIDChange.Format("15:04:05.000"))
	}
	if n := wdials.Load(); n != 1 {
		t.Errorf("the watch's client dialed the gateway %d times, want 1: its established connection was dropped", n)
	}
	if n := ldials.Load(); n != 1 {
		t.Errorf("the long-lived client dialed the gateway %d times, want 1: its established connection was dropped", n)
	}
	if fresh.Load() < 20 {
		t.Errorf("only %d fresh clients (new handshakes) during the load", fresh.Load())
	}
	if svid, err := src.GetX509SVID(); err == nil {
		t.Logf("the test process's own SVID now: serial %s, CA %x", svid.Certificates[0].SerialNumber, svid.Certificates[0].AuthorityKeyId)
	}
}

func describeObs(obs []rotationObs, start time.Time) string {
	var b strings.Builder
	for _, o := range obs {
		fmt.Fprintf(&b, "  +%5.1fs serial %s CA %s… expires +%.1fs\n", o.at.Sub(start).Seconds(), o.serial, o.ca[:min(len(o.ca), 12)],
			o.notAfter.Sub(start).Seconds())
	}
	return b.String()
}

const spireFederationPolicy = `intentions:
  - name: partner-kv
    source: "spiffe://partner.example/**"
    resources: [kv]
    actions: [read, write]
    keys: ["/partner/**"]
    effect: allow
  - name: admin-all
    source: "spiffe://example.org/admin"
    resources: ["*"]
    actions: ["*"]
    effect: allow
`

// TestSPIREFederation: a caller of a federated trust domain (partner.example,
// its own SPIRE deployment) is accepted by a gateway whose trust_domains name
// it, where policy decides, and refused at the handshake by one whose
// trust_domains do not, although that gateway has the partner's bundle too.
func TestSPIREFederation(t *testing.T) {
	p := newPKI(t)
	ec := startEtcd(t, p, 1)
	home := spiretest.Start(t, spiretest.Options{})
	partner := spiretest.Start(t, spiretest.Options{TrustDomain: "partner.example", FederateWith: []*spiretest.SPIRE{home}})
	gwID, admin, client := home.ID("/storegate"), home.ID("/admin"), partner.ID("/client")
	home.Register(t, gwID.String(), []string{spiretest.PathSelector(gatewayBin)}, []string{"localhost"}, "partner.example")
	home.Register(t, admin.String(), []string{spireSelf(t)}, nil)
	partner.Register(t, client.String(), []string{spireSelf(t)}, nil, "example.org")

	policyDir := copyPolicies(t, spireFederationPolicy)
	both := startSPIREGateway(t, p, ec, spireGatewayOpts{workloadAPI: home.SocketPath,
		trustDomains: []string{"example.org", "partner.example"}, policyDir: policyDir})
	homeOnly := startSPIREGateway(t, p, ec, spireGatewayOpts{workloadAPI: home.SocketPath,
		trustDomains: []string{"example.org"}, policyDir: policyDir})

	psrc := spireSource(t, partner.SocketPath)
	if svid, err := psrc.GetX509SVID(); err != nil || svid.ID != client {
		t.Fatalf("the partner SVID: %v, %v; want %s", svid, err, client)
	}
	if _, err := psrc.GetX509BundleForTrustDomain(home.TrustDomain); err != nil {
		t.Fatalf("the partner workload has no bundle for %s (federatesWith): %v", home.TrustDomain, err)
	}
	pcfg := spireTLS(psrc, gwID)
	hcfg := spireTLS(spireSource(t, home.SocketPath), gwID)

	t.Run("accepted where trusted", func(t *testing.T) {
		cli, _ := spireEtcd(t, "https://"+both.addr, pcfg)
		ctx, cancel := opCtx()
		defer cancel()
		if _, err := cli.Put(ctx, "/partner/x", "from-partner"); err != nil {
			t.Fatalf("put /partner/x as %s through the gateway trusting partner.example: %v", client, err)
		}
		resp, err := cli.Get(ctx, "/partner/x")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "from-partner" {
			t.Fatalf("get /partner/x as %s: %v, %v", client, resp, err)
		}
		_, err = cli.Put(ctx, "/home/x", "from-partner")
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("put /home/x as %s: %v, want permission denied (policy, not the handshake)", client, err)
		}
		line := logLine(t, both, "msg=deny", "caller="+client.String(), "/home/x")
		t.Logf("deny line: %s", line)
		if strings.Contains(both.logs.String(), "mtls: refused client") {
			t.Errorf("the gateway trusting partner.example refused a handshake:\n%s", both.logs.String())
		}
	})

	t.Run("refused where not trusted", func(t *testing.T) {
		err := handshakeErr(pcfg, homeOnly.addr)
		if err == nil {
			t.Fatalf("the gateway trusting only example.org accepted the handshake of %s", client)
		}
		t.Logf("the client saw: %v", err)
		line := logLine(t, homeOnly, `msg="mtls: refused client"`, `reason="untrusted trust domain"`, client.String())
		t.Logf("refusal line: %s", line)

		cli, _ := spireEtcd(t, "https://"+homeOnly.addr, pcfg)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, "/partner/refused", "x"); err == nil {
			t.Errorf("put /partner/refused as %s through the gateway trusting only example.org succeeded", client)
		}
		cli.Close()

		// example.org callers still get in, and nothing of the partner's
		// refused put reached etcd.
		hcli, _ := spireEtcd(t, "https://"+homeOnly.addr, hcfg)
		ctx2, cancel2 := opCtx()
		defer cancel2()
		if _, err := hcli.Put(ctx2, "/home/admin", "ok"); err != nil {
			t.Fatalf("put as %s through the gateway trusting only example.org: %v", admin, err)
		}
		resp, err := hcli.Get(ctx2, "/partner/refused")
		if err != nil || len(resp.Kvs) != 0 {
			t.Errorf("get /partner/refused: %v, %v; want no key", resp, err)
		}
	})
}

// TestSPIREBadInput: (a) a gateway whose agent is not running starts, says
// why it is not ready, and becomes ready once the agent is up; (b) an agent
// restart under a running gateway: established connections and watches
// carry on, new handshakes work with the cached SVIDs during the outage and
// with new ones after.
func TestSPIREBadInput(t *testing.T) {
	p := newPKI(t)
	ec := startEtcd(t, p, 1)
	// Two-minute SVIDs: renewed 55s after issue, so the cached ones are
	// valid for well over a minute when the agent stops.
	s := spiretest.Start(t, spiretest.Options{SVIDTTL: 2 * time.Minute})
	gwID, web, self := s.ID("/storegate"), s.ID("/web"), s.ID("/client")
	s.Register(t, gwID.String(), []string{spiretest.PathSelector(gatewayBin)}, []string{"localhost"})
	s.Register(t, web.String(), []string{s.FetchSelector()}, nil)
	s.Register(t, self.String(), []string{spireSelf(t)}, nil)

	s.StopAgent(t)
	gw := startSPIREGateway(t, p, ec, spireGatewayOpts{workloadAPI: s.SocketPath, notReady: true})

	t.Run("no agent yet", func(t *testing.T) {
		code, body := readyz(t, gw)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz with no agent: %d %q, want 503", code, body)
		}
		want := "no SVID yet from the workload API at " + s.SocketPath + " (retrying)"
		if !strings.Contains(body, want) {
			t.Errorf("/readyz with no agent says %q; want it to contain %q", body, want)
		}
		t.Logf("/readyz: %d %s", code, strings.TrimSpace(body))
		resp, err := http.Get("http://" + gw.admin + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz with no agent: %v %v, want 200 (the process is up)", resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
		// No SVID: no handshake.
		if err := handshakeErr(&tls.Config{InsecureSkipVerify: true}, gw.addr); err == nil {
			t.Error("a handshake with the gateway succeeded before it had an SVID")
		}

		s.StartAgent(t)
		start := time.Now()
		deadline := start.Add(90 * time.Second)
		for {
			code, body = readyz(t, gw)
			if code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz still %d %q 90s after the agent started", code, body)
			}
			time.Sleep(100 * time.Millisecond) // polling /readyz, bounded by the deadline
		}
		t.Logf("ready %v after the agent started", time.Since(start).Round(100*time.Millisecond))
		c := spireCtl(t, s, "web", localhostURL(t, gw.addr))
		if out := mustRun(t, c, "", "put", "/bad/a", "1"); out != "OK\n" {
			t.Fatalf("etcdctl put as %s: %q", web, out)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("agent restart", func(t *testing.T) {
		src := spireSource(t, s.SocketPath)
		cfg := spireTLS(src, gwID)
		endpoint := "https://" + gw.addr
		cli, dials := spireEtcd(t, endpoint, cfg)
		wctx, wcancel := context.WithCancel(context.Background())
		defer wcancel()
		wch := cli.Watch(wctx, "/restart/", clientv3.WithPrefix())
		putAndSee := func(key string) {
			t.Helper()
			ctx, cancel := opCtx()
			defer cancel()
			if _, err := cli.Put(ctx, key, key); err != nil {
				t.Fatalf("put %s on the established connection: %v", key, err)
			}
			for {
				select {
				case wr, ok := <-wch:
					if !ok {
						t.Fatalf("the watch closed waiting for %s", key)
					}
					if err := wr.Err(); err != nil {
						t.Fatalf("the watch failed waiting for %s: %v", key, err)
					}
					for _, ev := range wr.Events {
						if string(ev.Kv.Key) == key {
							return
						}
					}
				case <-ctx.Done():
					t.Fatalf("the watch did not deliver %s", key)
				}
			}
		}
		putAndSee("/restart/before")
		before, err := served(cfg, gw.addr)
		if err != nil {
			t.Fatal(err)
		}
		files := spireCtl(t, s, "web", localhostURL(t, gw.addr)) // fetched while the agent runs

		s.StopAgent(t)
		outage := time.Now()
		putAndSee("/restart/during-1")
		// New handshakes with the cached SVIDs: a new client of this process,
		// etcdctl with files fetched before, a bare handshake.
		fresh, fdials := spireEtcd(t, endpoint, cfg)
		ctx, cancel := opCtx()
		if _, err := fresh.Put(ctx, "/restart/during-fresh", "x"); err != nil {
			t.Errorf("put on a new connection during the agent's outage: %v", err)
		}
		cancel()
		fresh.Close()
		if n := fdials.Load(); n != 1 {
			t.Errorf("the new client dialed %d times during the outage, want 1", n)
		}
		if out, stderr, err := files.run(t, "", "put", "/restart/during-etcdctl", "x"); err != nil || out != "OK\n" {
			t.Errorf("etcdctl put during the agent's outage: %v %q %s", err, out, stderr)
		}
		cert, err := served(cfg, gw.addr)
		if err != nil {
			t.Errorf("handshake during the agent's outage: %v", err)
		} else if cert.SerialNumber.Cmp(before.SerialNumber) != 0 {
			t.Errorf("the gateway presented serial %s during the outage, want the cached %s", cert.SerialNumber, before.SerialNumber)
		}
		if code, body := readyz(t, gw); code != http.StatusOK {
			t.Errorf("/readyz during the agent's outage with a valid cached SVID: %d %q, want 200", code, body)
		}
		putAndSee("/restart/during-2")
		if left := before.NotAfter.Sub(time.Now()); left < 0 {
			t.Fatalf("the cached SVID expired during the outage (%v)", left)
		}
		s.StartAgent(t)
		restarted := time.Now()
		t.Logf("agent down for %v", restarted.Sub(outage).Round(100*time.Millisecond))

		// After the restart: the gateway takes a new SVID from the restarted
		// agent (its cache died with it) and new handshakes keep working.
		deadline := time.Now().Add(90 * time.Second)
		for {
			cert, err := served(cfg, gw.addr)
			if err != nil {
				t.Fatalf("handshake after the agent restarted: %v", err)
			}
			if cert.SerialNumber.Cmp(before.SerialNumber) != 0 {
				t.Logf("the gateway presents a new SVID (serial %s) %v after the agent restarted", cert.SerialNumber, time.Since(restarted).Round(100*time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the gateway still presents its pre-restart SVID 90s after the agent restarted")
			}
			time.Sleep(200 * time.Millisecond) // polling the presented SVID, bounded by the deadline
		}
		after, adials := spireEtcd(t, endpoint, cfg)
		ctx, cancel = opCtx()
		defer cancel()
		if _, err := after.Put(ctx, "/restart/after-fresh", "x"); err != nil {
			t.Errorf("put on a new connection after the agent restarted: %v", err)
		}
		if n := adials.Load(); n != 1 {
			t.Errorf("the new client dialed %d times after the restart, want 1", n)
		}
		refetched := spireCtl(t, s, "web", localhostURL(t, gw.addr))
		if out, stderr, err := refetched.run(t, "", "put", "/restart/after-etcdctl", "x"); err != nil || out != "OK\n" {
			t.Errorf("etcdctl put with a new SVID after the restart: %v %q %s", err, out, stderr)
		}
		putAndSee("/restart/after")
		if n := dials.Load(); n != 1 {
			t.Errorf("the established client dialed %d times, want 1: its connection was dropped", n)
		}
	})
}
