// Package spiretest starts a real SPIRE deployment (v1.13.3: one
// spire-server and one spire-agent) on loopback for tests, so that the
// gateway and its clients can take their identities from a real Workload API.
//
// The binaries are the ones `make spire` builds into the repository's bin/
// (from the tools/spire module). Start fails the test with "run make spire"
// when they are missing; it never skips.
//
// # The deployment
//
// The server listens on 127.0.0.1 at a free port, keeps its keys in memory
// (KeyManager "memory") and its data in sqlite3 (DataStore "sql"; SPIRE's
// sqlite driver needs cgo, so the server must be built with CGO_ENABLED=1),
// and attests agents with join tokens. Its configuration, data, logs and API
// socket live in the test's temporary directory.
//
// The agent attests with a join token that Start generates, bootstraps from
// the server's bundle (`spire-server bundle show`), keeps its keys in memory
// and attests workloads with the "unix" WorkloadAttestor with
// discover_workload_path on. Its Workload API socket is SocketPath, an
// address for go-spiffe's workloadapi.WithAddr ("unix:///…").
//
// # Telling workloads apart
//
// Tests run as root, so every process has the same unix:uid:0 and
// unix:gid:0 selectors: uid/gid selectors cannot tell the gateway from a test
// client. Register workloads by binary instead, with PathSelector:
//
//   - unix:path:<absolute path> matches the processes whose executable
//     (/proc/PID/exe, symbolic links resolved) is that file: the gateway
//     binary, the test binary (os.Executable()), or spire-agent itself.
//   - `spire-agent api fetch x509` (FetchX509, for etcdctl's files) runs the
//     spire-agent binary, so it gets the SVIDs of FetchSelector().
//   - unix:uid, unix:user, unix:gid, unix:group and unix:supplementary_gid
//     also exist; the unix:sha256 selector is turned off
//     (workload_size_limit = -1) so that the agent does not hash a 100 MB
//     binary on every attestation.
//
// Every entry that Register creates is a child of AgentID, a node alias
// (spiffe://<trust domain>/spiretest/agent) that each join token maps to.
//
// # Time to live and rotation
//
// SVIDTTL is the server's default_x509_svid_ttl (and the JWT-SVID and agent
// TTLs). SPIRE backdates every certificate's NotBefore by 10s, and the agent
// renews an X.509-SVID once less than half of its NotBefore–NotAfter
// lifetime is left: an SVID with a TTL of d is renewed (d-10s)/2 after it is
// issued (at the agent's next sync, every second here), so 30s gives a new
// SVID every 10s and a TTL of 10s or less one at every sync.
//
// CATTL is the server's ca_ttl (SPIRE's default is 24h). SPIRE itself has no
// lower bound: it prepares the next CA (and publishes it in the bundle) at
// half of the CA's lifetime, activates it at 5/6 of it, and checks every
// 10s, so Start refuses a CATTL under 1m, where the CA could expire before
// its successor is active. With CATTL: time.Minute the next CA is in the
// bundle 30s after Start and signs SVIDs from 50s on. No SVID outlives the
// CA that signed it (SPIRE caps NotAfter). SPIRE logs a warning unless
// default_x509_svid_ttl ≤ ca_ttl/6; without an explicit SVIDTTL, Start uses
// ca_ttl/6 kept between 30s and 1m, so the warning is expected for a CATTL
// under 3m and harmless.
//
// # Agent restarts
//
// A join token can be used once, and with KeyManager "memory" the agent's
// private key dies with it, so a restarted agent finds its old SVID in its
// data_dir without a key and attests again. StartAgent therefore gives it a
// fresh join token mapped to the same node alias, so every entry stays
// authorized across restarts; the Workload API socket keeps its path.
//
// # Federation
//
// Options.FederateWith (or Federate) exchanges the bundles of two
// deployments with `spire-server bundle show -format spiffe` and
// `spire-server bundle set -format spiffe`; Register's federatesWith names the
// trust domains whose bundles the workload receives. The exchange is a copy:
// after a CA rotation, call Federate again.
package spiretest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/internal/testenv"
)

// BinDirEnv names the environment variable that, when set, is the directory
// holding spire-server and spire-agent (default: the repository's bin/).
const BinDirEnv = "STOREGATE_BIN"

// Deadlines for readiness.
const (
	startTimeout    = 90 * time.Second // a server or agent becoming healthy
	registerTimeout = 60 * time.Second // a new entry reaching the agent
	fetchTimeout    = 60 * time.Second // FetchX509 getting an SVID
	cliTimeout      = 30 * time.Second // one spire-server/spire-agent command
	stopTimeout     = 15 * time.Second // SIGTERM before SIGKILL
	pollInterval    = 200 * time.Millisecond
)

// Options configure Start. The zero value is a deployment for example.org
// with SPIRE's default CA TTL and one-minute SVIDs.
type Options struct {
	// TrustDomain is the trust domain's name; default "example.org".
	TrustDomain string
	// SVIDTTL is default_x509_svid_ttl (also default_jwt_svid_ttl, and so the
	// agent's own SVID TTL); default 1m, or with a CATTL, CATTL/6 kept
	// between 30s and 1m.
	SVIDTTL time.Duration
	// CATTL is ca_ttl, the lifetime of the server's signing CA; zero keeps
	// SPIRE's default (24h). Set it to 1m (the least Start accepts) or 2m to
	// see a CA rotation.
	CATTL time.Duration
	// BinDir holds spire-server and spire-agent; default $STOREGATE_BIN or
	// the repository's bin/.
	BinDir string
	// FederateWith lists running deployments to exchange bundles with once
	// this one's server is up (see Federate).
	FederateWith []*SPIRE
	// LogLevel of both processes; default "DEBUG".
	LogLevel string
}

// SPIRE is a running deployment: a server and its agent.
type SPIRE struct {
	// TrustDomain is the deployment's trust domain.
	TrustDomain spiffeid.TrustDomain
	// SocketPath is the agent's Workload API address, "unix:///…/agent.sock"
	// (for workloadapi.WithAddr, or a gateway's workload API setting).
	SocketPath string
	// SocketFile is the same socket as a file path.
	SocketFile string
	// AgentID is the node alias that every join token maps to, and so the
	// parent of the entries that Register creates.
	AgentID spiffeid.ID
	// ServerAddr is the server's host:port on loopback.
	ServerAddr string
	// Dir holds the configuration, data and logs.
	Dir string

	opts       Options
	serverBin  string
	agentBin   string
	serverSock string
	agentConf  string

	mu        sync.Mutex
	server    *process
	agent     *process
	probeBin  string
	probeOnce sync.Once
	probeErr  error
	probeSeq  atomic.Int64
	started   atomic.Bool // the agent has been started before
}

// Start starts a SPIRE server and agent and stops them when the test ends.
// On failure the tails of both logs are written with t.Log.
func Start(t testing.TB, opts Options) *SPIRE {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Fatalf("spiretest: SPIRE's unix workload attestor needs Linux, not %s", runtime.GOOS)
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "example.org"
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		t.Fatalf("spiretest: trust domain: %v", err)
	}
	if opts.CATTL != 0 && opts.CATTL < time.Minute {
		t.Fatalf("spiretest: CATTL %v: SPIRE checks for CA rotation every 10s and activates the next CA at 5/6 of the CA's lifetime, so under 1m the CA can expire first", opts.CATTL)
	}
	if opts.SVIDTTL == 0 {
		opts.SVIDTTL = time.Minute
		if opts.CATTL > 0 {
			opts.SVIDTTL = min(max(opts.CATTL/6, 30*time.Second), time.Minute)
		}
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "DEBUG"
	}
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		t.Fatalf("spiretest: %v: run `make spire`", err)
	}
	s := &SPIRE{
		TrustDomain: td,
		AgentID:     spiffeid.RequireFromPath(td, "/spiretest/agent"),
		opts:        opts,
		serverBin:   filepath.Join(binDir, "spire-server"),
		agentBin:    filepath.Join(binDir, "spire-agent"),
	}
	for _, bin := range []string{s.serverBin, s.agentBin} {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("spiretest: no SPIRE binary at %s: run `make spire`", bin)
		}
	}
	s.Dir = t.TempDir()
	// Unix socket paths are limited to 108 bytes; t.TempDir() holds the test's
	// name, so keep the sockets in a short directory when it is too long.
	sockDir := s.Dir
	if len(filepath.Join(sockDir, "server.sock")) > 100 {
		sockDir, err = os.MkdirTemp("", "spire")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(sockDir) })
	}
	s.serverSock = filepath.Join(sockDir, "server.sock")
	s.SocketFile = filepath.Join(sockDir, "agent.sock")
	s.SocketPath = "unix://" + s.SocketFile
	for _, d := range []string{"server-data", "agent-data"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.stopAll)
	// Registered after stopAll, so it runs first: the tails end where the
	// test failed, not with the shutdown.
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLogs(t)
		}
	})

	s.startServer(t)
	for _, o := range opts.FederateWith {
		Federate(t, s, o)
	}
	s.writeAgentConfig(t)
	s.StartAgent(t)
	return s
}

// ID returns the SPIFFE ID with the given path in the deployment's trust
// domain.
func (s *SPIRE) ID(path string) spiffeid.ID {
	return spiffeid.RequireFromPath(s.TrustDomain, path)
}

// PathSelector is the unix:path selector of the executable at path (made
// absolute, symbolic links resolved, as the agent reads /proc/PID/exe).
func PathSelector(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	return "unix:path:" + path
}

// FetchSelector is the selector of `spire-agent api fetch` (FetchX509): the
// unix:path of the spire-agent binary.
func (s *SPIRE) FetchSelector() string { return PathSelector(s.agentBin) }

// Register creates a registration entry for spiffeID (a full SPIFFE ID, or a
// path in the deployment's trust domain) under AgentID with the given
// selectors (e.g. PathSelector(gatewayBin)), DNS names (put in the SVID's
// DNS SANs, for clients that check the server's host name) and federated
// trust domains ("other.org" or "spiffe://other.org"), and waits until the
// agent has the entry. It returns the entry's ID.
//
// Waiting: right after the entry, Register creates a probe entry whose only
// selector is the path of a private hard link to (or copy of) spire-agent,
// and polls `spire-agent api fetch x509` run from it until it is served the
// probe's SVID. The agent syncs all its entries at once, so by then it has
// the entry too; the probe entry is then deleted. While the agent is stopped
// Register does not wait: StartAgent does.
func (s *SPIRE) Register(t testing.TB, spiffeID string, selectors, dns []string, federatesWith ...string) string {
	t.Helper()
	id := s.parseID(t, spiffeID)
	if len(selectors) == 0 {
		t.Fatalf("spiretest: Register(%s) without selectors", id)
	}
	args := []string{"entry", "create", "-parentID", s.AgentID.String(), "-spiffeID", id.String()}
	for _, sel := range selectors {
		args = append(args, "-selector", sel)
	}
	for _, d := range dns {
		args = append(args, "-dns", d)
	}
	for _, fw := range federatesWith {
		ftd, err := spiffeid.TrustDomainFromString(fw)
		if err != nil {
			t.Fatalf("spiretest: federated trust domain %q: %v", fw, err)
		}
		args = append(args, "-federatesWith", ftd.IDString())
	}
	entryID := s.createEntry(t, args)
	s.mu.Lock()
	running := s.agent != nil
	s.mu.Unlock()
	if running { // else StartAgent waits
		s.waitForSync(t, id.String())
	}
	return entryID
}

// Unregister deletes the entry with the given ID (from Register).
func (s *SPIRE) Unregister(t testing.TB, entryID string) {
	t.Helper()
	if _, err := s.serverCLI("entry", "delete", "-entryID", entryID); err != nil {
		t.Fatalf("spiretest: deleting entry %s: %v", entryID, err)
	}
}

// X509Files are the files that `spire-agent api fetch x509 -write` wrote.
type X509Files struct {
	// Cert is the X.509-SVID and its intermediates (svid.0.pem).
	Cert string
	// Key is its private key, PKCS#8 (svid.0.key).
	Key string
	// Bundle is the trust domain's bundle (bundle.0.pem).
	Bundle string
	// Federated are the bundles of federated trust domains
	// (federated_bundle.0.N.pem), if the entry federates with any.
	Federated []string
}

// FetchX509 runs `spire-agent api fetch x509 -write dir` until the agent
// serves an SVID to it (the workload of FetchSelector()), and returns the
// files of the first one, e.g. for etcdctl's --cert, --key and --cacert.
func (s *SPIRE) FetchX509(t testing.TB, dir string) X509Files {
	t.Helper()
	var last error
	err := poll(fetchTimeout, func() (bool, error) {
		_, last = s.run(s.agentBin, "api", "fetch", "x509", "-socketPath", s.SocketFile, "-timeout", "5s", "-write", dir)
		return last == nil, s.agentExited()
	})
	if err != nil {
		t.Fatalf("spiretest: fetching an X.509-SVID through %s: %v (last: %v)", s.SocketFile, err, last)
	}
	f := X509Files{
		Cert:   filepath.Join(dir, "svid.0.pem"),
		Key:    filepath.Join(dir, "svid.0.key"),
		Bundle: filepath.Join(dir, "bundle.0.pem"),
	}
	for _, p := range []string{f.Cert, f.Key, f.Bundle} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("spiretest: spire-agent api fetch x509 -write: %v", err)
		}
	}
	f.Federated, _ = filepath.Glob(filepath.Join(dir, "federated_bundle.0.*.pem"))
	return f
}

// BundlePEM returns the server's current X.509 bundle, PEM-encoded.
func (s *SPIRE) BundlePEM(t testing.TB) []byte {
	t.Helper()
	out, err := s.serverCLI("bundle", "show")
	if err != nil {
		t.Fatalf("spiretest: spire-server bundle show: %v", err)
	}
	return out
}

// Federate makes a and b federate: each server gets the other's bundle
// (`bundle show -format spiffe` / `bundle set -format spiffe`). Entries still
// need federatesWith for their workloads to receive it. Call it again after a
// CA rotation to copy the new bundles.
func Federate(t testing.TB, a, b *SPIRE) {
	t.Helper()
	if a.TrustDomain == b.TrustDomain {
		t.Fatalf("spiretest: federating %s with itself", a.TrustDomain)
	}
	for _, p := range [][2]*SPIRE{{a, b}, {b, a}} {
		from, to := p[0], p[1]
		bundle, err := from.serverCLI("bundle", "show", "-format", "spiffe")
		if err != nil {
			t.Fatalf("spiretest: bundle show on %s: %v", from.TrustDomain, err)
		}
		if _, err := to.runStdin(bundle, to.serverBin, "bundle", "set", "-socketPath", to.serverSock,
			"-format", "spiffe", "-id", from.TrustDomain.IDString()); err != nil {
			t.Fatalf("spiretest: bundle set of %s on %s: %v", from.TrustDomain, to.TrustDomain, err)
		}
	}
}

// StopAgent stops the agent (SIGTERM, then SIGKILL) and waits for it to exit.
// The Workload API is gone until StartAgent.
func (s *SPIRE) StopAgent(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	p := s.agent
	s.agent = nil
	s.mu.Unlock()
	if p == nil {
		t.Fatal("spiretest: StopAgent: the agent is not running")
	}
	if err := p.stop(); err != nil {
		t.Logf("spiretest: agent: %v", err)
	}
}

// StartAgent starts the agent with a fresh join token for AgentID (a token
// can be used once) and waits until `spire-agent healthcheck` passes and,
// after a restart, until the agent has the entries registered so far (as
// Register waits). Start calls it; call it again after StopAgent.
func (s *SPIRE) StartAgent(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running := s.agent != nil
	s.mu.Unlock()
	if running {
		t.Fatal("spiretest: StartAgent: the agent is running")
	}
	out, err := s.serverCLI("token", "generate", "-spiffeID", s.AgentID.String(), "-ttl", "600", "-output", "json")
	if err != nil {
		t.Fatalf("spiretest: spire-server token generate: %v", err)
	}
	var tok struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(out, &tok); err != nil || tok.Value == "" {
		t.Fatalf("spiretest: spire-server token generate: no token in %q (%v)", out, err)
	}
	// The bootstrap bundle only counts when the agent has none cached in its
	// data_dir; keep it current all the same.
	if err := os.WriteFile(filepath.Join(s.Dir, "bootstrap.pem"), s.BundlePEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	// A stale socket file would make the healthcheck below meaningless.
	os.Remove(s.SocketFile)
	p, err := startProcess("spire-agent", filepath.Join(s.Dir, "agent.log"), s.agentBin,
		"run", "-config", s.agentConf, "-joinToken", tok.Value)
	if err != nil {
		t.Fatalf("spiretest: %v", err)
	}
	s.mu.Lock()
	s.agent = p
	s.mu.Unlock()
	err = poll(startTimeout, func() (bool, error) {
		_, err := s.run(s.agentBin, "healthcheck", "-socketPath", s.SocketFile)
		return err == nil, p.exitErr()
	})
	if err != nil {
		t.Fatalf("spiretest: spire-agent for %s is not healthy: %v\n%s", s.TrustDomain, err, tail(p.logPath, 40))
	}
	// A restarted agent is healthy before it has synced its entries.
	if s.started.Swap(true) {
		s.waitForSync(t, "the restarted agent")
	}
}

// startServer writes the server's configuration and starts it, on another
// free port if the one it picked was taken in the meantime.
func (s *SPIRE) startServer(t testing.TB) {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.ServerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := filepath.Join(s.Dir, "server.conf")
		if err := os.WriteFile(conf, []byte(s.serverConfig(port)), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Remove(s.serverSock)
		p, err := startProcess("spire-server", filepath.Join(s.Dir, "server.log"), s.serverBin, "run", "-config", conf)
		if err != nil {
			t.Fatalf("spiretest: %v", err)
		}
		s.mu.Lock()
		s.server = p
		s.mu.Unlock()
		lastErr = poll(startTimeout, func() (bool, error) {
			_, err := s.serverCLI("healthcheck")
			return err == nil, p.exitErr()
		})
		if lastErr == nil {
			return
		}
		p.stop()
		s.mu.Lock()
		s.server = nil
		s.mu.Unlock()
		if !strings.Contains(tail(p.logPath, 40), "address already in use") {
			break
		}
	}
	t.Fatalf("spiretest: spire-server for %s is not healthy: %v\n%s", s.TrustDomain, lastErr, tail(filepath.Join(s.Dir, "server.log"), 40))
}

func (s *SPIRE) serverConfig(port int) string {
	q := strconv.Quote
	ttl := s.opts.SVIDTTL.String()
	caTTL := ""
	if s.opts.CATTL > 0 {
		caTTL = "\n    ca_ttl = " + q(s.opts.CATTL.String())
	}
	return fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = %d
    socket_path = %s
    trust_domain = %s
    data_dir = %s
    log_level = %s
    default_x509_svid_ttl = %s
    default_jwt_svid_ttl = %s%s
    experimental {
        # Entries reach the agent within about two seconds (default 5s).
        cache_reload_interval = "1s"
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %s
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`, port, q(s.serverSock), q(s.TrustDomain.Name()), q(filepath.Join(s.Dir, "server-data")),
		q(s.opts.LogLevel), q(ttl), q(ttl), caTTL,
		q(filepath.Join(s.Dir, "server-data", "datastore.sqlite3")))
}

func (s *SPIRE) writeAgentConfig(t testing.TB) {
	t.Helper()
	q := strconv.Quote
	host, port, _ := net.SplitHostPort(s.ServerAddr)
	conf := fmt.Sprintf(`agent {
    data_dir = %s
    log_level = %s
    server_address = %s
    server_port = %s
    socket_path = %s
    trust_bundle_path = %s
    trust_domain = %s
    experimental {
        # Entries reach the agent within about two seconds (default 5s).
        sync_interval = "1s"
    }
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {
            # unix:path selectors; no unix:sha256 (no hashing of each binary).
            discover_workload_path = true
            workload_size_limit = -1
        }
    }
}
`, q(filepath.Join(s.Dir, "agent-data")), q(s.opts.LogLevel), q(host), port, q(s.SocketFile),
		q(filepath.Join(s.Dir, "bootstrap.pem")), q(s.TrustDomain.Name()))
	s.agentConf = filepath.Join(s.Dir, "agent.conf")
	if err := os.WriteFile(s.agentConf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *SPIRE) parseID(t testing.TB, spiffeID string) spiffeid.ID {
	t.Helper()
	if strings.HasPrefix(spiffeID, "/") {
		id, err := spiffeid.FromPath(s.TrustDomain, spiffeID)
		if err != nil {
			t.Fatalf("spiretest: SPIFFE ID path %q: %v", spiffeID, err)
		}
		return id
	}
	id, err := spiffeid.FromString(spiffeID)
	if err != nil {
		t.Fatalf("spiretest: SPIFFE ID %q: %v", spiffeID, err)
	}
	return id
}

// createEntry runs `spire-server entry create` and returns the entry's ID.
func (s *SPIRE) createEntry(t testing.TB, args []string) string {
	t.Helper()
	out, err := s.serverCLI(append(args, "-output", "json")...)
	if err != nil {
		t.Fatalf("spiretest: spire-server %s: %v", strings.Join(args, " "), err)
	}
	var resp struct {
		Results []struct {
			Status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"status"`
			Entry struct {
				ID string `json:"id"`
			} `json:"entry"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &resp); err != nil || len(resp.Results) != 1 {
		t.Fatalf("spiretest: spire-server entry create: unexpected output %q (%v)", out, err)
	}
	r := resp.Results[0]
	if r.Status.Code != 0 || r.Entry.ID == "" {
		t.Fatalf("spiretest: spire-server %s: %s (code %d)", strings.Join(args, " "), r.Status.Message, r.Status.Code)
	}
	return r.Entry.ID
}

// waitForSync waits until the agent has every entry created so far, with a
// probe entry for a private copy of spire-agent (see Register).
func (s *SPIRE) waitForSync(t testing.TB, what string) {
	t.Helper()
	probe := s.probe(t)
	probeID := s.ID(fmt.Sprintf("/spiretest/probe/%d", s.probeSeq.Add(1)))
	entryID := s.createEntry(t, []string{"entry", "create", "-parentID", s.AgentID.String(),
		"-spiffeID", probeID.String(), "-selector", PathSelector(probe)})
	var last error
	err := poll(registerTimeout, func() (bool, error) {
		var out []byte
		out, last = s.run(probe, "api", "fetch", "x509", "-socketPath", s.SocketFile, "-timeout", "5s", "-output", "json")
		return last == nil && bytes.Contains(out, []byte(probeID.String())), s.agentExited()
	})
	if err != nil {
		t.Fatalf("spiretest: the agent did not get the entry for %s: %v (last: %v)", what, err, last)
	}
	if _, err := s.serverCLI("entry", "delete", "-entryID", entryID); err != nil {
		t.Fatalf("spiretest: deleting probe entry: %v", err)
	}
}

// probe returns the path of the probe binary: a hard link to (or copy of)
// spire-agent in the deployment's directory, a workload of its own.
func (s *SPIRE) probe(t testing.TB) string {
	t.Helper()
	s.probeOnce.Do(func() {
		p := filepath.Join(s.Dir, "probe", "spire-agent")
		if s.probeErr = os.MkdirAll(filepath.Dir(p), 0o755); s.probeErr != nil {
			return
		}
		if os.Link(s.agentBin, p) == nil {
			s.probeBin = p
			return
		}
		s.probeErr = copyFile(s.agentBin, p)
		s.probeBin = p
	})
	if s.probeErr != nil {
		t.Fatalf("spiretest: probe binary: %v", s.probeErr)
	}
	return s.probeBin
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func (s *SPIRE) serverCLI(args ...string) ([]byte, error) {
	// -socketPath follows the subcommand: `spire-server entry create -socketPath …`.
	var full []string
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	full = append(full, args[:i]...)
	full = append(full, "-socketPath", s.serverSock)
	full = append(full, args[i:]...)
	return s.run(s.serverBin, full...)
}

func (s *SPIRE) run(bin string, args ...string) ([]byte, error) {
	return s.runStdin(nil, bin, args...)
}

// runStdin runs one command with a deadline and returns its standard output;
// its error includes the standard error.
func (s *SPIRE) runStdin(stdin []byte, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String() + "\n" + stdout.String())
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

func (s *SPIRE) agentExited() error {
	s.mu.Lock()
	p := s.agent
	s.mu.Unlock()
	if p == nil {
		return errors.New("the agent is stopped")
	}
	return p.exitErr()
}

func (s *SPIRE) stopAll() {
	s.mu.Lock()
	agent, server := s.agent, s.server
	s.agent, s.server = nil, nil
	s.mu.Unlock()
	if agent != nil {
		agent.stop()
	}
	if server != nil {
		server.stop()
	}
}

func (s *SPIRE) dumpLogs(t testing.TB) {
	for _, name := range []string{"server.log", "agent.log"} {
		t.Logf("spiretest: last lines of %s's %s:\n%s", s.TrustDomain, name, tail(filepath.Join(s.Dir, name), 80))
	}
}

// process is a SPIRE server or agent (a testenv.Proc) with its output in a
// log file.
type process struct {
	*testenv.Proc
	name    string
	logPath string
}

func startProcess(name, logPath, bin string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = fmt.Fprintf(logf, "=== spiretest: %s %s (%s)\n", bin, strings.Join(args, " "), time.Now().Format(time.RFC3339Nano))
	logf.Close()
	if err != nil {
		return nil, err
	}
	p := &process{Proc: &testenv.Proc{Name: name, Bin: bin, Args: args, LogFile: logPath}, name: name, logPath: logPath}
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return p, nil
}

// exitErr is nil while the process runs.
func (p *process) exitErr() error {
	if gone, err := p.Exited(); gone {
		return fmt.Errorf("%s exited: %w", p.name, err)
	}
	return nil
}

func (p *process) stop() error {
	if err := p.exitErr(); err != nil {
		return err
	}
	_ = p.Signal(syscall.SIGTERM)
	if p.Wait(stopTimeout) {
		return nil
	}
	p.Kill()
	return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.name, stopTimeout)
}

// poll calls f every pollInterval until it reports done, returns an error
// (the thing waited for can no longer happen), or timeout passes.
func poll(timeout time.Duration, f func() (done bool, fatal error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, fatal := f()
		if done {
			return nil
		}
		if fatal != nil {
			return fatal
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", timeout)
		}
		time.Sleep(pollInterval)
	}
}

func freePort() (int, error) { return testenv.Port() }

// tail returns about the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// findBinDir returns the directory with the SPIRE binaries: dir if given,
// else $STOREGATE_BIN, else the bin/ of the repository holding this source
// file (or, when sources are trimmed, of the one holding the working
// directory).
func findBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(BinDirEnv)
	}
	if dir != "" {
		return filepath.Abs(dir)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if isRepoRoot(root) {
			return filepath.Join(root, "bin"), nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if isRepoRoot(d) {
			return filepath.Join(d, "bin"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no storegate repository above %s (set %s)", wd, BinDirEnv)
		}
	}
}

func isRepoRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return f[1] == "github.com/storegate/storegate"
		}
	}
	return false
}
