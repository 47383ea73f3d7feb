package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/config"
)

// The example plugins (plugins/examples, built into bin/plugins by `make
// plugins`) and small misbehaving C guests, loaded by the real gateway and
// driven with the real etcdctl and consul CLI against real etcd and Consul.

// ---- configuration ---------------------------------------------------------

// plug is one entry of the gateway's plugins: section. It is written as
// JSON, which the gateway's YAML loader reads as flow YAML.
type plug struct {
	Name        string              `json:"name"`
	Path        string              `json:"path"`
	Match       map[string][]string `json:"match,omitempty"`
	Timeout     string              `json:"timeout,omitempty"`
	MemoryLimit string              `json:"memory_limit,omitempty"`
	Failure     string              `json:"failure,omitempty"`
	Instances   int                 `json:"instances,omitempty"`
	Config      any                 `json:"config,omitempty"`
}

// plugins is the configuration's plugins section for ps.
func plugins(t *testing.T, ps ...plug) []config.PluginConfig {
	t.Helper()
	var out []config.PluginConfig
	for _, p := range ps {
		c := config.PluginConfig{Name: p.Name, Path: p.Path, Instances: p.Instances}
		// failure and match hold enums: decoded as the gateway decodes them.
		enums, _ := json.Marshal(map[string]any{"failure": p.Failure, "match": p.Match})
		if err := yaml.Unmarshal(enums, &c); err != nil {
			t.Fatalf("plugin %s: %v", p.Name, err)
		}
		if p.Config != nil {
			m, ok := p.Config.(map[string]any)
			if !ok {
				t.Fatalf("plugin %s: config %T is not an object", p.Name, p.Config)
			}
			c.Config = m
		}
		if p.Timeout != "" {
			d, err := time.ParseDuration(p.Timeout)
			if err != nil {
				t.Fatal(err)
			}
			c.Timeout = config.Duration(d)
		}
		if p.MemoryLimit != "" {
			if err := yaml.Unmarshal([]byte(p.MemoryLimit), &c.MemoryLimit); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, c)
	}
	return out
}

// exampleTimeout is the per-call timeout the example plugins get in these
// tests instead of the 20ms default: under -race on two shared cores a call
// of a Go (wasip1) module can be descheduled past 20ms of wall-clock time.
// The timeout itself is tested with a guest that loops.
const exampleTimeout = "5s"

// pluginGateway starts a gateway with plugins ps, a Consul front when agent
// is not nil, and policyDir ("" for allow-all). It returns the gateway and
// the Consul front's https:// address ("" without one).
func pluginGateway(t *testing.T, p *pki, ec *etcdCluster, agent *consulAgent, policyDir string, ps ...plug) (*gateway, string) {
	t.Helper()
	if agent == nil {
		return startGateway(t, p, ec, gatewayOpts{policyDir: policyDir, plugins: plugins(t, ps...)}), ""
	}
	return consulGateway(t, p, ec, "http://"+agent.httpAddr, gatewayOpts{policyDir: policyDir, plugins: plugins(t, ps...)})
}

var buildPluginsOnce sync.Once

// examplePlugin copies bin/plugins/<name>.wasm (built by `make plugins`,
// run here if a module is missing) into a directory of the test's own, so
// that the gateway's plugin watcher sees only this test's files.
func examplePlugin(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join(repoRoot, "bin", "plugins", name+".wasm")
	if _, err := os.Stat(src); err != nil {
		buildPluginsOnce.Do(func() {
			mk := exec.Command("make", "plugins")
			mk.Dir, mk.Stdout, mk.Stderr = repoRoot, os.Stderr, os.Stderr
			if err := mk.Run(); err != nil {
				t.Errorf("building the example plugins with `make plugins`: %v", err)
			}
		})
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("example plugin %s: %v (run `make plugins`)", name, err)
	}
	dst := filepath.Join(t.TempDir(), name+".wasm")
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// ---- C test guests ----------------------------------------------------------

// guestC is a freestanding guest of ABI v1 (clang --target=wasm32-wasi
// -nostdlib, as plugins/helpers_test.go builds its own): a validator that
// lets every op continue unless its value starts with TRIGGER (default
// "boom"); such an op makes it misbehave as one of BAD_TRAP, BAD_LOOP,
// BAD_GROW (grow memory until refused, then trap), BAD_MALFORMED (a result
// past the end of memory), or, with DENY, deny it. ABI_VERSION changes what
// storegate_abi_version says; NO_ON_REQUEST leaves the request hook out.
const guestC = `
#pragma clang diagnostic ignored "-Wunused-function" /* each variant uses some helpers */
typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;
#define EXPORT(name) __attribute__((export_name(name)))
#ifndef ABI_VERSION
#define ABI_VERSION 1
#endif
#ifndef TRIGGER
#define TRIGGER "boom"
#endif

extern u8 __heap_base;
static u32 heap_top;
static u8 out[512];

static u32 slen(const char *s) { u32 n = 0; while (s[n]) n++; return n; }
static u32 rd32(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }
static void wr32(u8 *p, u32 v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }

EXPORT("storegate_abi_version") u32 abi_version(void) { return ABI_VERSION; }
EXPORT("storegate_capabilities") u32 capabilities(void) { return 0; }
EXPORT("storegate_alloc") u32 alloc(u32 n) {
	if (!heap_top) heap_top = (u32)&__heap_base;
	u32 p = (heap_top + 15) & ~15u, end = p + n;
	u32 have = __builtin_wasm_memory_size(0) * 65536u;
	if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) == (u32)-1) return 0;
	heap_top = end;
	return p;
}
EXPORT("storegate_init") u64 init(u32 ptr, u32 len) { (void)ptr; (void)len; return 0; }

static u64 deny(const char *reason) {
	u32 n = slen(reason);
	for (u32 i = 0; i < 20; i++) out[i] = 0;
	out[0] = 1;
	wr32(out + 4, n);
	wr32(out + 8, 0xFFFFFFFFu); wr32(out + 12, 0xFFFFFFFFu); wr32(out + 16, 0xFFFFFFFFu);
	for (u32 i = 0; i < n; i++) out[20 + i] = (u8)reason[i];
	return (u64)(u32)out << 32 | (20 + n);
}

static int triggered(const u8 *p) {
	u32 caller = rd32(p + 16), key = rd32(p + 20), end = rd32(p + 24), vlen = rd32(p + 28);
	const u8 *v = p + 40 + caller + key + end;
	const char *t = TRIGGER;
	u32 n = slen(t);
	if (!(p[5] & 1) || vlen < n) return 0;
	for (u32 i = 0; i < n; i++) if (v[i] != (u8)t[i]) return 0;
	return 1;
}

#ifndef NO_ON_REQUEST
EXPORT("storegate_on_request") u64 on_request(const u8 *p, u32 n) {
	(void)n;
	if (!triggered(p)) return 0;
#if defined(BAD_TRAP)
	__builtin_trap();
#elif defined(BAD_LOOP)
	volatile u32 x = 0;
	for (;;) x++;
#elif defined(BAD_GROW)
	while (__builtin_wasm_memory_grow(0, 1) != (u32)-1) {
	}
	__builtin_trap();
#elif defined(BAD_MALFORMED)
	return (u64)16 << 32 | 0x7fffffffu;
#elif defined(DENY)
	return deny("e2e guest: values starting with " TRIGGER " are refused");
#endif
	return 0;
}
#endif
`

// buildGuest compiles guestC with the given -D defines into the test's
// temporary directory and returns the .wasm file. clang with a wasm32
// target is required (make clang installs it): the test fails without it.
func buildGuest(t *testing.T, name string, defines ...string) string {
	t.Helper()
	if _, err := exec.LookPath("clang"); err != nil {
		t.Fatalf("clang is required to build the test guests (clang, lld; `make clang`): %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, name+".c")
	if err := os.WriteFile(src, []byte(guestC), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+".wasm")
	args := []string{"--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-nostdlib", "-fno-builtin",
		"-Wall", "-Werror", "-Wl,--no-entry", "-o", out}
	for _, d := range defines {
		args = append(args, "-D"+d)
	}
	cmd := exec.Command("clang", append(args, src)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("building test guest %s %v: %v\n%s", name, defines, err, stderr.String())
	}
	return out
}

// ---- etcd over gRPC, for the reason the CLI does not print ---------------

// The etcd front answers a denial with etcd's own "permission denied" (what
// etcdctl prints) and puts the reason in the storegate-reason trailer.

// etcdKV is a KV client of the gateway's etcd front as caller who.
func etcdKV(t *testing.T, p *pki, addr, who string) pb.KVClient {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.path(who+".pem"), p.path(who+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(mustRead(t, p.bundle()))) {
		t.Fatal("no certificates in the bundle")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewKVClient(conn)
}

// putReason puts key=value and returns the error and the storegate-reason
// trailer.
func putReason(kv pb.KVClient, key, value string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var md metadata.MD
	_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(value)}, grpc.Trailer(&md))
	return strings.Join(md.Get("storegate-reason"), "; "), err
}

// rangeReason reads [key, end) and returns the answer, the storegate-reason
// trailer and the error.
func rangeReason(kv pb.KVClient, key, end string) (*pb.RangeResponse, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var md metadata.MD
	r := &pb.RangeRequest{Key: []byte(key)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	resp, err := kv.Range(ctx, r, grpc.Trailer(&md))
	return resp, strings.Join(md.Get("storegate-reason"), "; "), err
}

// txnReason runs a transaction and returns the storegate-reason trailer
// and the error.
func txnReason(kv pb.KVClient, r *pb.TxnRequest) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var md metadata.MD
	_, err := kv.Txn(ctx, r, grpc.Trailer(&md))
	return strings.Join(md.Get("storegate-reason"), "; "), err
}

// wantDenied checks a gRPC error is etcd's permission denied with a
// storegate-reason containing want.
func wantDenied(t *testing.T, what string, reason string, err error, want string) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "etcdserver: permission denied") {
		t.Errorf("%s: err = %v, want etcdserver: permission denied", what, err)
	}
	if !strings.Contains(reason, want) {
		t.Errorf("%s: storegate-reason = %q, want it to contain %q", what, reason, want)
	}
}

// ---- direct reads of the stores ------------------------------------------

// etcdJSON is etcdctl's get -w json.
type etcdJSON struct {
	Header struct {
		Revision int64 `json:"revision"`
	} `json:"header"`
	Kvs []struct {
		Key   []byte `json:"key"`
		Value []byte `json:"value"`
	} `json:"kvs"`
}

// etcdGet runs etcdctl get -w json with args and returns the keys and
// values, and the header's revision.
// fleetPrefix is where each gateway replica keeps its record (read directly,
// a prefix get of "/" sees it).
const fleetPrefix = "/_storegate/fleet/"

func etcdGet(t *testing.T, c ctl, args ...string) (map[string]string, int64) {
	t.Helper()
	out := mustRun(t, c, "", append([]string{"get", "-w", "json"}, args...)...)
	var r etcdJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("etcdctl get -w json %v: %v\n%s", args, err, out)
	}
	kvs := map[string]string{}
	for _, kv := range r.Kvs {
		if strings.HasPrefix(string(kv.Key), fleetPrefix) {
			continue // the gateway's own replica record, not what callers wrote
		}
		kvs[string(kv.Key)] = string(kv.Value)
	}
	return kvs, r.Header.Revision
}

// etcdRevision is the store's current revision.
func etcdRevision(t *testing.T, c ctl) int64 {
	t.Helper()
	_, rev := etcdGet(t, c, "/")
	return rev
}

// consulRaw reads a key's raw value direct from the agent; ok is false
// when the key does not exist.
func consulRaw(t *testing.T, agent *consulAgent, key string) ([]byte, bool) {
	t.Helper()
	resp, err := http.Get("http://" + agent.httpAddr + "/v1/kv/" + key + "?raw")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return b, true
	case http.StatusNotFound:
		return nil, false
	}
	t.Fatalf("GET %s?raw direct: %d %s", key, resp.StatusCode, b)
	return nil, false
}

// consulPutRaw writes a key's value direct to the agent, around the gateway.
func consulPutRaw(t *testing.T, agent *consulAgent, key string, value []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+agent.httpAddr+"/v1/kv/"+key, bytes.NewReader(value))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "true" {
		t.Fatalf("PUT %s direct: %d %s", key, resp.StatusCode, b)
	}
}

// ---- CLI expectations -------------------------------------------------------

const (
	etcdDenied   = "Error: etcdserver: permission denied"
	consulDenied = "Unexpected response code: 403 (Permission denied: "
)

// etcdOK runs etcdctl and fails the test unless it succeeds with want as
// its whole output.
func etcdOK(t *testing.T, c ctl, stdin, want string, args ...string) {
	t.Helper()
	out, stderr, err := c.run(t, stdin, args...)
	if err != nil || out != want {
		t.Errorf("etcdctl %q as %s: err=%v\nstdout: %q\nwant:   %q\nstderr: %s", args, c.who, err, out, want, stderr)
	}
}

// etcdRefused runs etcdctl and fails the test unless it is refused with
// permission denied, printing nothing on stdout.
func etcdRefused(t *testing.T, c ctl, stdin string, args ...string) {
	t.Helper()
	out, stderr, err := c.run(t, stdin, args...)
	if err == nil || !strings.Contains(stderr, etcdDenied) {
		t.Errorf("etcdctl %q as %s: err=%v, want %q\nstdout: %q\nstderr: %s", args, c.who, err, etcdDenied, out, stderr)
	}
	if strings.TrimSpace(out) != "" {
		t.Errorf("etcdctl %q as %s printed %q although refused", args, c.who, out)
	}
}

// consulOK runs the consul CLI and fails the test unless it succeeds with
// want as its whole output.
func consulOK(t *testing.T, c consulCLI, want string, args ...string) {
	t.Helper()
	out, stderr, err := c.run(t, "", args...)
	if err != nil || out != want {
		t.Errorf("consul %q as %s: err=%v\nstdout: %q\nwant:   %q\nstderr: %s", args, c.who, err, out, want, stderr)
	}
}

// consulRefused runs the consul CLI and fails the test unless it is refused
// with a 403 whose reason contains want; it returns stdout and stderr.
func consulRefused(t *testing.T, c consulCLI, want string, args ...string) (string, string) {
	t.Helper()
	out, stderr, err := c.run(t, "", args...)
	if err == nil || !strings.Contains(stderr, consulDenied) || !strings.Contains(stderr, want) {
		t.Errorf("consul %q as %s: err=%v, want %q with %q\nstdout: %q\nstderr: %s", args, c.who, err, consulDenied, want, out, stderr)
	}
	return out, stderr
}

// waitOutput waits until a background command's stdout or stderr contains
// want, or it exits, or a deadline passes; it returns both, joined.
func waitOutput(t *testing.T, b *bgCmd, want string) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		all := b.out.String() + b.errb.String()
		if strings.Contains(all, want) {
			return all
		}
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %q; stdout:\n%s\nstderr:\n%s", want, b.out.String(), b.errb.String())
		case err := <-b.done:
			b.done <- err
			all := b.out.String() + b.errb.String()
			if !strings.Contains(all, want) {
				t.Fatalf("exited (%v) before printing %q; stdout:\n%s\nstderr:\n%s", err, want, b.out.String(), b.errb.String())
			}
			return all
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ---- 1. schema --------------------------------------------------------------

// TestPluginSchema: the schema example on /config/** for both fronts: a
// valid JSON value is stored as written; an invalid one is refused with the
// schema's error, and nothing reaches the store.
func TestPluginSchema(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	gw, front := pluginGateway(t, p, ec, agent, "", plug{
		Name: "schema", Path: examplePlugin(t, "schema"), Timeout: exampleTimeout,
		Match: map[string][]string{"resources": {"kv"}, "actions": {"write"}, "keys": {"/config/**"}},
		Config: map[string]any{"rules": []any{map[string]any{"prefix": "/config/", "schema": map[string]any{
			"type": "object", "required": []string{"name"},
			"properties": map[string]any{"name": map[string]any{"type": "string"}, "port": map[string]any{"type": "integer"}}}}}},
	})
	direct := ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}
	web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}
	kv := etcdKV(t, p, gw.addr, "web")

	t.Run("etcd", func(t *testing.T) {
		const good = `{"name":"api","port":8080}`
		etcdOK(t, web, "", "OK\n", "put", "/config/api", good)
		if got, _ := etcdGet(t, direct, "/config/api"); got["/config/api"] != good {
			t.Errorf("stored %q, want %q", got["/config/api"], good)
		}
		for _, c := range []struct{ key, value, reason string }{
			{"/config/noname", `{"port":80}`, `plugin schema: value does not match the schema for "/config/": at '': missing property 'name'`},
			{"/config/badport", `{"name":"a","port":"80"}`, `plugin schema: value does not match the schema for "/config/": at '/port': got string, want integer`},
			{"/config/notjson", `{"name":`, `plugin schema: value is not JSON: unexpected EOF`},
		} {
			etcdRefused(t, web, "", "put", c.key, c.value)
			reason, err := putReason(kv, c.key, c.value)
			wantDenied(t, "put "+c.key, reason, err, c.reason)
		}
		// A transaction's put is judged like a put; the whole txn is refused.
		etcdRefused(t, web, "\nput /config/txn-ok {\"name\":\"t\"}\nput /config/txn-bad [1]\n\n\n", "txn")
		// Outside /config/ the plugin does not run.
		etcdOK(t, web, "", "OK\n", "put", "/other/free", "not json")
		got, _ := etcdGet(t, direct, "/", "--prefix")
		want := map[string]string{"/config/api": good, "/other/free": "not json"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("etcd holds %v, want %v", got, want)
		}
	})

	t.Run("consul", func(t *testing.T) {
		cweb := consulCLI{p: p, addr: front, who: "web"}
		const good = `{"name":"db"}`
		consulOK(t, cweb, "Success! Data written to: config/db\n", "kv", "put", "config/db", good)
		if v, ok := consulRaw(t, agent, "config/db"); !ok || string(v) != good {
			t.Errorf("stored %q (%v), want %q", v, ok, good)
		}
		consulRefused(t, cweb, `plugin schema: value does not match the schema for "/config/": at '': got array, want object)`,
			"kv", "put", "config/list", "[1,2]")
		consulRefused(t, cweb, `plugin schema: value does not match the schema for "/config/": at '/port': got string, want integer)`,
			"kv", "put", "config/badport", `{"name":"a","port":"x"}`)
		consulRefused(t, cweb, "plugin schema: value is not JSON: ", "kv", "put", "config/notjson", "nope")
		for _, k := range []string{"config/list", "config/badport", "config/notjson"} {
			if v, ok := consulRaw(t, agent, k); ok {
				t.Errorf("refused %s reached Consul: %q", k, v)
			}
		}
		consulOK(t, cweb, "Success! Data written to: elsewhere/x\n", "kv", "put", "elsewhere/x", "not json")
	})
}

// ---- 2. namespace -----------------------------------------------------------

// TestPluginNamespace: with the namespace example, web and admin each write
// /app/x; the stores hold /tenants/<caller>/app/x; every read, watch,
// delete and transaction shows a caller only its own keys, as it wrote them.
func TestPluginNamespace(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	gw, front := pluginGateway(t, p, ec, agent, "", plug{
		Name: "namespace", Path: examplePlugin(t, "namespace"), Timeout: exampleTimeout,
		Match:  map[string][]string{"resources": {"kv", "watch"}},
		Config: map[string]any{"root": "/tenants"},
	})
	direct := ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}
	callers := map[string]ctl{
		"web":   {p: p, endpoint: "https://" + gw.addr, who: "web"},
		"admin": {p: p, endpoint: "https://" + gw.addr, who: "admin"},
	}
	web, admin := callers["web"], callers["admin"]

	t.Run("etcd", func(t *testing.T) {
		// Watches from the current revision on, so that no event written
		// after this point can be missed whenever the watch is set up.
		rev := etcdRevision(t, direct) + 1
		watches := map[string]*bgCmd{}
		for who, c := range callers {
			watches[who] = c.start(t, "watch", "--prefix", "/app/", "--prev-kv", fmt.Sprintf("--rev=%d", rev))
		}
		for _, who := range []string{"admin", "web"} {
			etcdOK(t, callers[who], "", "OK\n", "put", "/app/x", who+"-1")
			etcdOK(t, callers[who], "", "OK\n", "put", "/app/y", who+"-2")
		}
		etcdOK(t, web, "", "OK\n", "put", "/app/x", "web-3")
		got, _ := etcdGet(t, direct, "", "--from-key")
		want := map[string]string{
			"/tenants/admin/app/x": "admin-1", "/tenants/admin/app/y": "admin-2",
			"/tenants/web/app/x": "web-3", "/tenants/web/app/y": "web-2",
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("etcd holds %v, want %v", got, want)
		}

		etcdOK(t, web, "", "/app/x\nweb-3\n", "get", "/app/x")
		etcdOK(t, admin, "", "/app/x\nadmin-1\n", "get", "/app/x")
		etcdOK(t, web, "", "/app/x\nweb-3\n/app/y\nweb-2\n", "get", "--prefix", "/app/")
		etcdOK(t, admin, "", "/app/x\nadmin-1\n/app/y\nadmin-2\n", "get", "--prefix", "/app/")
		// Everything there is, for web: its own keys only.
		etcdOK(t, web, "", "/app/x\nweb-3\n/app/y\nweb-2\n", "get", "", "--from-key")
		etcdOK(t, web, "", "/app/x\n\n/app/y\n\n", "get", "--prefix", "/", "--keys-only")
		// A range across the namespace root is clamped into the tenant.
		if out, stderr, err := admin.run(t, "", "get", "/", "\xff", "--count-only", "-w", "fields"); err != nil ||
			!strings.Contains(out, `"Count" : 2`) {
			t.Errorf("admin's count of [/, \\xff): %v\n%s%s", err, out, stderr)
		}
		// Without the leading / a key could collide across tenants.
		etcdRefused(t, web, "", "put", "app/noslash", "v")
		reason, err := putReason(etcdKV(t, p, gw.addr, "web"), "app/noslash", "v")
		wantDenied(t, "put app/noslash", reason, err, `plugin namespace: namespace: a key must start with "/"`)

		// Transactions: compares, puts and reads all in the caller's space.
		etcdOK(t, web, "value(\"/app/x\") = \"web-3\"\n\nput /app/t tv\nget /app/x\n\nput /app/t fv\n\n",
			"SUCCESS\n\nOK\n\n/app/x\nweb-3\n", "txn")
		etcdOK(t, admin, "value(\"/app/x\") = \"web-3\"\n\nput /app/t tv\n\nget /app/x\n\n",
			"FAILURE\n\n/app/x\nadmin-1\n", "txn")
		if got, _ := etcdGet(t, direct, "/tenants/", "--prefix"); got["/tenants/web/app/t"] != "tv" || len(got) != 5 {
			t.Errorf("after the txns etcd holds %v, want /tenants/web/app/t=tv added", got)
		}

		// Deletes return the previous key-values in the caller's space.
		etcdOK(t, web, "", "1\n/app/y\nweb-2\n", "del", "--prev-kv", "/app/y")
		etcdOK(t, admin, "", "2\n/app/x\nadmin-1\n/app/y\nadmin-2\n", "del", "--prev-kv", "--prefix", "/app/")
		got, _ = etcdGet(t, direct, "", "--from-key")
		want = map[string]string{"/tenants/web/app/t": "tv", "/tenants/web/app/x": "web-3"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("after the deletes etcd holds %v, want %v", got, want)
		}

		// Each watch saw exactly its caller's events, keys as written.
		wantWatch := map[string]string{
			"web": "PUT\n/app/x\nweb-1\nPUT\n/app/y\nweb-2\nPUT\n/app/x\nweb-1\n/app/x\nweb-3\n" +
				"PUT\n/app/t\ntv\nDELETE\n/app/y\nweb-2\n/app/y\n\n",
			"admin": "PUT\n/app/x\nadmin-1\nPUT\n/app/y\nadmin-2\n" +
				"DELETE\n/app/x\nadmin-1\n/app/x\n\nDELETE\n/app/y\nadmin-2\n/app/y\n\n",
		}
		for who, w := range watches {
			w.waitFor(t, wantWatch[who])
			w.stop()
			if got := w.out.String(); got != wantWatch[who] {
				t.Errorf("%s's watch printed\n%q\nwant\n%q", who, got, wantWatch[who])
			}
		}
	})

	t.Run("consul", func(t *testing.T) {
		cweb := consulCLI{p: p, addr: front, who: "web"}
		cadmin := consulCLI{p: p, addr: front, who: "admin"}
		cdirect := consulCLI{addr: "http://" + agent.httpAddr}
		consulOK(t, cweb, "Success! Data written to: app/c\n", "kv", "put", "app/c", "web-c")
		consulOK(t, cweb, "Success! Data written to: app/dir/d\n", "kv", "put", "app/dir/d", "web-d")
		consulOK(t, cadmin, "Success! Data written to: app/c\n", "kv", "put", "app/c", "admin-c")
		// The stored keys: the tenant prefix, no leading / and no //.
		consulOK(t, cdirect, "tenants/admin/app/c:admin-c\ntenants/web/app/c:web-c\ntenants/web/app/dir/d:web-d\n",
			"kv", "get", "-recurse")
		consulOK(t, cweb, "web-c\n", "kv", "get", "app/c")
		consulOK(t, cadmin, "admin-c\n", "kv", "get", "app/c")
		consulOK(t, cweb, "app/c:web-c\napp/dir/d:web-d\n", "kv", "get", "-recurse", "app/")
		consulOK(t, cadmin, "app/c:admin-c\n", "kv", "get", "-recurse", "app/")
		consulOK(t, cweb, "app/c:web-c\napp/dir/d:web-d\n", "kv", "get", "-recurse")
		consulOK(t, cweb, "app/c\napp/dir/\n", "kv", "get", "-keys", "app/")
		// The CLI drops a leading / (Consul keys have none); the gateway
		// then maps the same key.
		consulOK(t, cweb, "web-c\n", "kv", "get", "/app/c")
		out, _, _ := cweb.run(t, "", "kv", "get", "-detailed", "app/c")
		if !strings.Contains(out, "Key") || !strings.Contains(out, "app/c\n") || strings.Contains(out, "tenants") {
			t.Errorf("kv get -detailed app/c as web:\n%s", out)
		}
		// Transactions (HTTP API): keys mapped in, stripped on the way back.
		code, body := call(t, httpsAs(t, p, "web"), "PUT", front+"/v1/txn",
			`[{"KV":{"Verb":"set","Key":"app/tx","Value":"dHg="}},{"KV":{"Verb":"get","Key":"app/c"}},{"KV":{"Verb":"get-tree","Key":"app/"}}]`)
		var txr struct {
			Results []struct{ KV struct{ Key, Value string } }
		}
		if err := json.Unmarshal([]byte(body), &txr); code != http.StatusOK || err != nil {
			t.Errorf("txn as web: %d %v %s", code, err, body)
		}
		var keys []string
		for _, r := range txr.Results {
			keys = append(keys, r.KV.Key+"="+r.KV.Value)
		}
		if got := strings.Join(keys, " "); got != "app/tx= app/c=d2ViLWM= app/c=d2ViLWM= app/dir/d=d2ViLWQ= app/tx=dHg=" {
			t.Errorf("txn as web answered %s\n%s", got, body)
		}
		consulOK(t, cadmin, "Success! Deleted keys with prefix: app/\n", "kv", "delete", "-recurse", "app/")
		consulOK(t, cdirect, "tenants/web/app/c:web-c\ntenants/web/app/dir/d:web-d\ntenants/web/app/tx:tx\n", "kv", "get", "-recurse")
	})
}

// ---- 3. encrypt -------------------------------------------------------------

// TestPluginEncrypt: with the encrypt example on /secret/, values written
// through the gateway are ciphertext in the stores and plaintext through
// the gateway, whatever the read; a value changed in the store is refused
// on the way back, never sent as stored.
func TestPluginEncrypt(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	gw, front := pluginGateway(t, p, ec, agent, "", plug{
		Name: "encrypt", Path: examplePlugin(t, "encrypt"), Timeout: exampleTimeout,
		Match:  map[string][]string{"resources": {"kv", "watch"}, "keys": {"/secret/**"}},
		Config: map[string]any{"key_base64": base64.StdEncoding.EncodeToString(key), "prefixes": []string{"/secret/"}},
	})
	direct := ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}
	web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}
	kv := etcdKV(t, p, gw.addr, "web")

	// sealed checks that stored holds plain sealed: not it, not containing
	// it, format version 1 and 29 bytes longer.
	sealed := func(what string, stored []byte, plain string) {
		t.Helper()
		if string(stored) == plain || bytes.Contains(stored, []byte(plain)) {
			t.Errorf("%s is stored in the clear: %q", what, stored)
		}
		if len(stored) != len(plain)+29 || stored[0] != 1 {
			t.Errorf("%s: stored %d bytes starting %#x, want %d starting 0x01", what, len(stored), stored[:min(1, len(stored))], len(plain)+29)
		}
	}

	t.Run("etcd", func(t *testing.T) {
		rev := etcdRevision(t, direct) + 1
		watch := web.start(t, "watch", "--prefix", "/secret/", "--prev-kv", fmt.Sprintf("--rev=%d", rev))
		const a, b, b2 = "plain-a: the launch code", "plain-b: hunter2", "plain-b2: correct horse"
		etcdOK(t, web, "", "OK\n", "put", "/secret/a", a)
		etcdOK(t, web, "", "OK\n", "put", "/secret/b", b)
		etcdOK(t, web, "", "OK\n", "put", "/public/p", "in the clear")
		got, _ := etcdGet(t, direct, "", "--from-key")
		sealed("/secret/a", []byte(got["/secret/a"]), a)
		sealed("/secret/b", []byte(got["/secret/b"]), b)
		if got["/public/p"] != "in the clear" {
			t.Errorf("/public/p stored as %q", got["/public/p"])
		}
		// A second write of one plaintext is sealed under a fresh nonce.
		etcdOK(t, web, "", "OK\n", "put", "/secret/a", a)
		if again, _ := etcdGet(t, direct, "/secret/a"); again["/secret/a"] == got["/secret/a"] {
			t.Error("the same plaintext was sealed twice to the same ciphertext")
		}

		etcdOK(t, web, "", "/secret/a\n"+a+"\n", "get", "/secret/a")
		etcdOK(t, web, "", a+"\n", "get", "/secret/a", "--print-value-only")
		etcdOK(t, web, "", "/secret/a\n"+a+"\n/secret/b\n"+b+"\n", "get", "--prefix", "/secret/")
		etcdOK(t, web, "", "OK\n/secret/b\n"+b+"\n", "put", "--prev-kv", "/secret/b", b2)
		etcdOK(t, web, "\nget /secret/b\n\n\n", "SUCCESS\n\n/secret/b\n"+b2+"\n", "txn")
		etcdOK(t, web, "", "1\n/secret/b\n"+b2+"\n", "del", "--prev-kv", "/secret/b")
		// A transaction's put is sealed like a put.
		etcdOK(t, web, "\nput /secret/txn sealed-in-a-txn\n\n\n", "SUCCESS\n\nOK\n", "txn")
		txnStored, _ := etcdGet(t, direct, "/secret/txn")
		sealed("/secret/txn", []byte(txnStored["/secret/txn"]), "sealed-in-a-txn")
		etcdOK(t, web, "", "sealed-in-a-txn\n", "get", "/secret/txn", "--print-value-only")
		etcdOK(t, web, "", "1\n", "del", "/secret/txn")
		// A value compare would compare plaintext with ciphertext.
		// (ABI.md and the encrypt README: a kv op with a value that is not a
		// write — a txn value compare — is denied by encrypt.)
		etcdRefused(t, web, "value(\"/secret/a\") = \""+a+"\"\n\nput /public/q 1\n\n\n", "txn")
		reason, err := txnReason(kv, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("/secret/a"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_Value{Value: []byte(a)}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("/public/q"), Value: []byte("1")}}}},
		})
		wantDenied(t, "txn comparing the value of /secret/a", reason, err,
			"plugin encrypt: encrypt: cannot compare the value of /secret/a: it is stored encrypted")

		wantWatch := "PUT\n/secret/a\n" + a + "\nPUT\n/secret/b\n" + b + "\nPUT\n/secret/a\n" + a + "\n/secret/a\n" + a +
			"\nPUT\n/secret/b\n" + b + "\n/secret/b\n" + b2 + "\nDELETE\n/secret/b\n" + b2 + "\n/secret/b\n\n" +
			"PUT\n/secret/txn\nsealed-in-a-txn\nDELETE\n/secret/txn\nsealed-in-a-txn\n/secret/txn\n\n"
		watch.waitFor(t, wantWatch)
		if got := watch.out.String(); got != wantWatch {
			t.Errorf("watch printed\n%q\nwant\n%q", got, wantWatch)
		}

		// Tampering: garbage, a flipped bit, and a valid ciphertext moved
		// to another key (the key is the additional data) — each refused,
		// never returned as stored.
		stored, _ := etcdGet(t, direct, "/secret/a")
		ct := []byte(stored["/secret/a"])
		flipped := append([]byte(nil), ct...)
		flipped[len(flipped)-1] ^= 1
		tampered := map[string][]byte{"/secret/garbage": []byte("not a ciphertext at all"), "/secret/flipped": flipped, "/secret/moved": ct}
		for k, v := range tampered {
			mustRun(t, direct, string(v), "put", k)
			if got, _ := etcdGet(t, direct, k); got[k] != string(v) {
				t.Fatalf("direct put of %s stored %q, want %q", k, got[k], v)
			}
		}
		for k, v := range tampered {
			out, stderr, err := web.run(t, "", "get", k)
			if err == nil || !strings.Contains(stderr, etcdDenied) {
				t.Errorf("get %s: err=%v stdout=%q stderr=%s", k, err, out, stderr)
			}
			if bytes.Contains([]byte(out+stderr), v) {
				t.Errorf("get %s returned the stored value: %q %q", k, out, stderr)
			}
			_, reason, err := rangeReason(kv, k, "")
			wantDenied(t, "get "+k, reason, err, "plugin encrypt: cannot decrypt value of "+k)
		}
		out, stderr, err := web.run(t, "", "get", "--prefix", "/secret/")
		if err == nil || !strings.Contains(stderr, etcdDenied) || strings.Contains(out, a) {
			t.Errorf("get --prefix /secret/ with tampered values: err=%v stdout=%q stderr=%s", err, out, stderr)
		}
		// The watch of /secret/ is refused at the first tampered event, and
		// nothing of it is sent.
		all := waitOutput(t, watch, "permission denied")
		t.Logf("the watch of /secret/ ended with: %q", all[strings.LastIndex(all, "DELETE"):])
		for _, v := range tampered {
			if bytes.Contains([]byte(all), v[:8]) {
				t.Errorf("the watch printed a tampered value:\n%q", all)
			}
		}
	})

	t.Run("consul", func(t *testing.T) {
		cweb := consulCLI{p: p, addr: front, who: "web"}
		cdirect := consulCLI{addr: "http://" + agent.httpAddr}
		const c, d = "plain-c: consul secret", "plain-d: another one"
		consulOK(t, cweb, "Success! Data written to: secret/c\n", "kv", "put", "secret/c", c)
		consulOK(t, cweb, "Success! Data written to: secret/d\n", "kv", "put", "secret/d", d)
		stored, _ := consulRaw(t, agent, "secret/c")
		sealed("secret/c", stored, c)
		storedD, _ := consulRaw(t, agent, "secret/d")
		sealed("secret/d", storedD, d)
		if out, _, _ := cdirect.run(t, "", "kv", "get", "secret/c"); strings.Contains(out, c) {
			t.Errorf("consul kv get direct shows the plaintext: %q", out)
		}

		consulOK(t, cweb, c+"\n", "kv", "get", "secret/c")
		consulOK(t, cweb, "secret/c:"+c+"\nsecret/d:"+d+"\n", "kv", "get", "-recurse", "secret/")
		consulOK(t, cweb, "secret/c\nsecret/d\n", "kv", "get", "-keys", "secret/")
		out, stderr, err := cweb.run(t, "", "kv", "get", "-detailed", "secret/c")
		if err != nil || !regexp.MustCompile(`(?m)^Value\s+`+regexp.QuoteMeta(c)+`$`).MatchString(out) {
			t.Errorf("kv get -detailed: %v\n%s%s", err, out, stderr)
		}
		out, stderr, err = cweb.run(t, "", "kv", "export", "secret/")
		var exported []struct{ Key, Value string }
		if err != nil || json.Unmarshal([]byte(out), &exported) != nil || len(exported) != 2 ||
			exported[0].Value != base64.StdEncoding.EncodeToString([]byte(c)) {
			t.Errorf("kv export: %v %+v\n%s%s", err, exported, out, stderr)
		}
		hc := httpsAs(t, p, "web")
		if code, body := call(t, hc, "GET", front+"/v1/kv/secret/c?raw", ""); code != 200 || body != c {
			t.Errorf("?raw: %d %q", code, body)
		}

		// Consul's transactions (no CLI command: the HTTP API): a set is
		// sealed, a get opened.
		const tx = "plain-tx: set in a transaction"
		code, body := call(t, hc, "PUT", front+"/v1/txn", `[{"KV":{"Verb":"set","Key":"secret/tx","Value":"`+
			base64.StdEncoding.EncodeToString([]byte(tx))+`"}},{"KV":{"Verb":"get","Key":"secret/c"}}]`)
		var txr struct {
			Results []struct{ KV struct{ Key, Value string } }
		}
		if code != http.StatusOK || json.Unmarshal([]byte(body), &txr) != nil || len(txr.Results) != 2 ||
			txr.Results[1].KV.Value != base64.StdEncoding.EncodeToString([]byte(c)) {
			t.Errorf("txn set+get: %d %s", code, body)
		}
		storedTx, _ := consulRaw(t, agent, "secret/tx")
		sealed("secret/tx (txn set)", storedTx, tx)
		consulOK(t, cweb, tx+"\n", "kv", "get", "secret/tx")

		// Tampered in the store: refused, never sent as stored.
		flipped := append([]byte(nil), stored...)
		flipped[len(flipped)-1] ^= 1
		tampered := map[string][]byte{"secret/garbage": []byte("not a ciphertext either"), "secret/flipped": flipped, "secret/moved": stored}
		for k, v := range tampered {
			consulPutRaw(t, agent, k, v)
			out, stderr := consulRefused(t, cweb, "plugin encrypt: cannot decrypt value of /"+k+")", "kv", "get", k)
			if bytes.Contains([]byte(out+stderr), v[:8]) {
				t.Errorf("kv get %s returned the stored value: %q %q", k, out, stderr)
			}
			code, body := call(t, hc, "GET", front+"/v1/kv/"+k+"?raw", "")
			if code != http.StatusForbidden || !strings.Contains(body, "cannot decrypt value of /"+k) || bytes.Contains([]byte(body), v[:8]) {
				t.Errorf("?raw of %s: %d %q", k, code, body)
			}
		}
		code, body = call(t, hc, "PUT", front+"/v1/txn", `[{"KV":{"Verb":"get","Key":"secret/c"}},{"KV":{"Verb":"get","Key":"secret/garbage"}}]`)
		if code != http.StatusForbidden || !strings.Contains(body, "plugin encrypt: cannot decrypt value of /secret/garbage") ||
			strings.Contains(body, base64.StdEncoding.EncodeToString([]byte(c))) {
			t.Errorf("txn get of a tampered value: %d %q", code, body)
		}
		out, _ = consulRefused(t, cweb, "plugin encrypt: cannot decrypt value of /secret/", "kv", "get", "-recurse", "secret/")
		if strings.Contains(out, c) {
			t.Errorf("kv get -recurse with tampered values printed %q", out)
		}
		// Listing keys carries no value: it passes.
		consulOK(t, cweb, "secret/c\nsecret/d\nsecret/flipped\nsecret/garbage\nsecret/moved\nsecret/tx\n", "kv", "get", "-keys", "secret/")
	})
}

// ---- 4. registration ----------------------------------------------------------

// TestPluginRegistration: with the registration example, `consul services
// register` of a service its caller owns, with a valid name, succeeds; a
// wrong or missing owner, a bad name and a script check are refused with
// the reason; the agent holds only what was allowed.
func TestPluginRegistration(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	// The shipped authz.rego refuses script checks itself (unsafe_check), before any
	// plugin runs; take that rule out so the plugin's own rule is seen.
	policyDir := copyPolicies(t, allowAll)
	authz := filepath.Join(policyDir, "authz.rego")
	rego := mustRead(t, authz)
	if strings.Count(rego, "\tnot unsafe_check\n") != 1 {
		t.Fatalf("authz.rego no longer has one `not unsafe_check` line:\n%s", rego)
	}
	if err := os.WriteFile(authz, []byte(strings.Replace(rego, "\tnot unsafe_check\n", "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, front := pluginGateway(t, p, ec, agent, policyDir, plug{
		Name: "registration", Path: examplePlugin(t, "registration"), Timeout: exampleTimeout,
		Match:  map[string][]string{"protocols": {"consul"}, "resources": {"service", "check"}, "actions": {"register"}},
		Config: map[string]any{"name_pattern": "^[a-z][a-z0-9-]*$", "owner": "last-segment"},
	})
	cweb := consulCLI{p: p, addr: front, who: "web"}
	const why = "plugin registration: registration: "

	consulOK(t, cweb, "Registered service: web-api\n", "services", "register", "-name=web-api", "-port=8080", "-meta", "owner=web")
	consulRefused(t, cweb, why+`service "web-other": Meta.owner is "admin", want "web" (the caller's SPIFFE ID's last path segment))`,
		"services", "register", "-name=web-other", "-port=8081", "-meta", "owner=admin")
	consulRefused(t, cweb, why+`service "web-nobody" has no Meta.owner (want "web", the caller's SPIFFE ID's last path segment))`,
		"services", "register", "-name=web-nobody", "-port=8082")
	consulRefused(t, cweb, why+`service name "Web_API" does not match ^[a-z][a-z0-9-]*$)`,
		"services", "register", "-name=Web_API", "-port=8083", "-meta", "owner=web")
	// Script checks go over the HTTP API: the consul CLI (1.14.11) drops a
	// check's args when it reads a service file, so it cannot send one.
	hc := httpsAs(t, p, "web")
	for _, c := range []struct{ body, reason string }{
		{`{"Name":"web-script","Port":8084,"Meta":{"owner":"web"},"Check":{"Name":"run","ScriptArgs":["/bin/true"],"Interval":"10s"}}`,
			`Check ("run") is a script check (ScriptArgs): script checks are not allowed`},
		{`{"Name":"web-script","Port":8084,"Meta":{"owner":"web"},"Checks":[{"Name":"ok","TTL":"10s"},{"Name":"disk","ScriptArgs":["df"],"Interval":"10s"}]}`,
			`Checks[1] ("disk") is a script check (ScriptArgs): script checks are not allowed`},
	} {
		code, body := call(t, hc, "PUT", front+"/v1/agent/service/register", c.body)
		if code != http.StatusForbidden || body != "Permission denied: "+why+c.reason {
			t.Errorf("register %s: %d %q, want 403 %q", c.body, code, body, why+c.reason)
		}
	}

	// Checks registered on their own are judged for the script rule.
	if code, body := call(t, hc, "PUT", front+"/v1/agent/check/register",
		`{"Name":"web-run","ServiceID":"web-api","ScriptArgs":["/bin/true"],"Interval":"10s"}`); code != http.StatusForbidden ||
		!strings.Contains(body, why+`check ("web-run") is a script check (ScriptArgs): script checks are not allowed`) {
		t.Errorf("script check registration: %d %q", code, body)
	}
	if code, body := call(t, hc, "PUT", front+"/v1/agent/check/register",
		`{"Name":"web-ttl","ServiceID":"web-api","TTL":"30s"}`); code != http.StatusOK {
		t.Errorf("TTL check registration: %d %q", code, body)
	}

	resp, err := http.Get("http://" + agent.httpAddr + "/v1/agent/services")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var services map[string]struct {
		Service string
		Meta    map[string]string
	}
	if err := json.NewDecoder(resp.Body).Decode(&services); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range services {
		names = append(names, s.Service)
	}
	sort.Strings(names)
	if fmt.Sprint(names) != "[web-api]" || services["web-api"].Meta["owner"] != "web" {
		t.Errorf("the agent's services: %+v, want web-api owned by web only", services)
	}
	resp2, err := http.Get("http://" + agent.httpAddr + "/v1/agent/checks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	var checks map[string]struct{ Name string }
	if err := json.NewDecoder(resp2.Body).Decode(&checks); err != nil {
		t.Fatal(err)
	}
	if len(checks) != 1 || checks["web-ttl"].Name != "web-ttl" {
		t.Errorf("the agent's checks: %+v, want web-ttl only", checks)
	}
}

// ---- 5. limits (C) ----------------------------------------------------------

// TestPluginLimitsC: the C example refuses a value over its limit and a key
// with a character outside its charset, through etcdctl and the consul CLI;
// good writes pass.
func TestPluginLimitsC(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	gw, front := pluginGateway(t, p, ec, agent, "", plug{
		Name: "limits", Path: examplePlugin(t, "limits"), Timeout: exampleTimeout,
		Match:  map[string][]string{"resources": {"kv"}, "actions": {"write"}},
		Config: map[string]any{"max_value_bytes": 64, "key_charset": "a-zA-Z0-9/_.-"},
	})
	direct := ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}
	web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}
	kv := etcdKV(t, p, gw.addr, "web")
	at, over := strings.Repeat("v", 64), strings.Repeat("w", 65)

	t.Run("etcd", func(t *testing.T) {
		etcdOK(t, web, "", "OK\n", "put", "/lim/at-limit", at)
		etcdOK(t, web, "", "OK\n", "put", "/lim/Good_key-1.txt", "x")
		etcdRefused(t, web, "", "put", "/lim/over", over)
		reason, err := putReason(kv, "/lim/over", over)
		wantDenied(t, "put /lim/over", reason, err, "plugin limits: value is 65 bytes, the limit is 64")
		etcdRefused(t, web, "", "put", "/lim/bad!key", "x")
		reason, err = putReason(kv, "/lim/bad!key", "x")
		wantDenied(t, "put /lim/bad!key", reason, err, "plugin limits: key has character '!' at offset 8, outside a-zA-Z0-9/_.-")
		reason, err = putReason(kv, "/lim/caf\xc3\xa9", "x")
		wantDenied(t, "put /lim/café", reason, err, "plugin limits: key has byte 0xC3 at offset 8, outside a-zA-Z0-9/_.-")
		etcdRefused(t, web, "\nput /lim/txn-ok 1\nput /lim/txn-over "+over+"\n\n\n", "txn")
		// Reads are not judged, whatever the key.
		etcdOK(t, web, "", "", "get", "/lim/bad!key")
		got, _ := etcdGet(t, direct, "", "--from-key")
		want := map[string]string{"/lim/at-limit": at, "/lim/Good_key-1.txt": "x"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("etcd holds %v, want %v", got, want)
		}
	})

	t.Run("consul", func(t *testing.T) {
		cweb := consulCLI{p: p, addr: front, who: "web"}
		consulOK(t, cweb, "Success! Data written to: lim/at-limit\n", "kv", "put", "lim/at-limit", at)
		consulRefused(t, cweb, "plugin limits: value is 65 bytes, the limit is 64)", "kv", "put", "lim/over", over)
		// Consul keys get their leading / in the envelope: offset 8 again.
		consulRefused(t, cweb, "plugin limits: key has character '!' at offset 8, outside a-zA-Z0-9/_.-)", "kv", "put", "lim/bad!key", "x")
		consulRefused(t, cweb, "plugin limits: key has character ' ' at offset 8, outside a-zA-Z0-9/_.-)", "kv", "put", "lim/bad key", "x")
		if v, ok := consulRaw(t, agent, "lim/at-limit"); !ok || string(v) != at {
			t.Errorf("lim/at-limit stored %q %v", v, ok)
		}
		for _, k := range []string{"lim/over", "lim/bad!key", "lim/bad%20key"} {
			if v, ok := consulRaw(t, agent, k); ok {
				t.Errorf("refused %s reached Consul: %q", k, v)
			}
		}
	})
}

// ---- 6. misbehaving plugins ---------------------------------------------------

// TestPluginBad: plugins that trap, loop, exhaust their memory or return a
// malformed result when a value starts with "boom". Under failure: deny the
// op is refused naming the plugin and the kind, unmatched ops and later
// good values pass (the instance was replaced), and under failure: allow
// the op goes through unchanged; each failure is counted by kind. Modules
// that do not implement the ABI fail `gateway plugin check` and keep
// `gateway serve` from starting.
func TestPluginBad(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	kinds := []struct {
		kind, define, timeout, memory string
	}{
		{"trap", "BAD_TRAP", "5s", ""},
		{"timeout", "BAD_LOOP", "100ms", ""},
		{"memory", "BAD_GROW", "5s", "2MiB"},
		{"malformed", "BAD_MALFORMED", "5s", ""},
	}
	var ps []plug
	for _, k := range kinds {
		wasm := buildGuest(t, k.kind, k.define)
		for _, failure := range []string{"deny", "allow"} {
			ps = append(ps, plug{Name: "bad-" + k.kind + "-" + failure, Path: wasm, Failure: failure,
				Timeout: k.timeout, MemoryLimit: k.memory, Instances: 1,
				Match: map[string][]string{"resources": {"kv"}, "keys": {"/" + k.kind + "-" + failure + "/**"}}})
		}
	}
	gw, front := pluginGateway(t, p, ec, agent, "", ps...)
	direct := ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}
	web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}
	cweb := consulCLI{p: p, addr: front, who: "web"}
	kv := etcdKV(t, p, gw.addr, "web")
	before := byLabels(scrape(t, gw), "storegate_plugin_failures_total", "plugin", "kind")

	wantFailures := map[string]float64{}
	for _, k := range kinds {
		t.Run(k.kind, func(t *testing.T) {
			deny, allow := "bad-"+k.kind+"-deny", "bad-"+k.kind+"-allow"
			reason := "plugin " + deny + " failed: " + k.kind + ": "
			dk := "/" + k.kind + "-deny/"
			// failure: deny
			etcdRefused(t, web, "", "put", dk+"a", "boom-1")
			r, err := putReason(kv, dk+"a", "boom-2")
			wantDenied(t, "put "+dk+"a boom-2", r, err, reason)
			_, stderr := consulRefused(t, cweb, reason, "kv", "put", strings.TrimPrefix(dk, "/")+"c", "boom-3")
			t.Logf("consul: %s", strings.TrimSpace(stderr))
			etcdOK(t, web, "", "OK\n", "put", "/unmatched/"+k.kind, "boom-4")
			etcdOK(t, web, "", "OK\n", "put", dk+"a", "good-1")
			etcdOK(t, web, "", "/"+k.kind+"-deny/a\ngood-1\n", "get", dk+"a")
			consulOK(t, cweb, "Success! Data written to: "+k.kind+"-deny/c\n", "kv", "put", k.kind+"-deny/c", "good-2")
			// failure: allow
			ak := "/" + k.kind + "-allow/"
			etcdOK(t, web, "", "OK\n", "put", ak+"a", "boom-5")
			consulOK(t, cweb, "Success! Data written to: "+k.kind+"-allow/c\n", "kv", "put", k.kind+"-allow/c", "boom-6")
			etcdOK(t, web, "", "OK\n", "put", ak+"b", "good-3")

			got, _ := etcdGet(t, direct, "/"+k.kind+"-", "--prefix")
			want := map[string]string{dk + "a": "good-1", ak + "a": "boom-5", ak + "b": "good-3"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("etcd holds %v, want %v", got, want)
			}
			if v, _ := consulRaw(t, agent, k.kind+"-deny/c"); string(v) != "good-2" {
				t.Errorf("%s-deny/c = %q, want good-2", k.kind, v)
			}
			if v, _ := consulRaw(t, agent, k.kind+"-allow/c"); string(v) != "boom-6" {
				t.Errorf("%s-allow/c = %q, want boom-6 (unchanged)", k.kind, v)
			}
			wantFailures[deny+"/"+k.kind] = 3 // two etcd puts and one consul put
			wantFailures[allow+"/"+k.kind] = 2
		})
	}
	// The unmatched puts: no plugin ran.
	got, _ := etcdGet(t, direct, "/unmatched/", "--prefix")
	if len(got) != len(kinds) {
		t.Errorf("unmatched puts stored %v", got)
	}
	sameCounts(t, "storegate_plugin_failures_total{plugin,kind}",
		delta(before, byLabels(scrape(t, gw), "storegate_plugin_failures_total", "plugin", "kind")), wantFailures)
	if logs := gw.logs.String(); !strings.Contains(logs, "plugin failed; the op is denied (failure: deny)") ||
		!strings.Contains(logs, "plugin failed; the op continues unchanged (failure: allow)") {
		t.Errorf("the gateway did not log the failures:\n%s", logs)
	}

	t.Run("not the ABI", func(t *testing.T) {
		broken := []struct{ name, wasm, problem string }{
			{"abi-v2", buildGuest(t, "abi2", "ABI_VERSION=2"), "storegate_abi_version returned 2"},
			{"no-hook", buildGuest(t, "nohook", "NO_ON_REQUEST"), `missing export "storegate_on_request" (i32, i32) -> i64`},
		}
		for _, b := range broken {
			out, errOut, err := gatewayCmd(t, "plugin", "check", b.wasm)
			if err == nil || !strings.Contains(out, "problem: "+b.problem) || !strings.Contains(errOut, "does not implement storegate plugin ABI v1") {
				t.Errorf("plugin check %s: err=%v\nstdout: %s\nstderr: %s", b.name, err, out, errOut)
			}
			cfg := gatewayConfig(t, p, ec, plugins(t, plug{Name: b.name, Path: b.wasm}))
			out, errOut, err = gatewayCmd(t, "serve", "--config", cfg)
			if err == nil || !strings.Contains(errOut, fmt.Sprintf("plugin %q (%s)", b.name, b.wasm)) || !strings.Contains(errOut, b.problem) {
				t.Errorf("serve with %s: err=%v, want a refusal naming the plugin\nstdout: %s\nstderr: %s", b.name, err, out, errOut)
			}
		}
		// An init that refuses its configuration keeps serve from starting.
		limits := examplePlugin(t, "limits")
		cfg := gatewayConfig(t, p, ec, plugins(t, plug{Name: "limits-unset", Path: limits, Config: map[string]any{}}))
		if out, errOut, err := gatewayCmd(t, "serve", "--config", cfg); err == nil ||
			!strings.Contains(errOut, fmt.Sprintf("plugin %q (%s)", "limits-unset", limits)) || !strings.Contains(errOut, "nothing to check") {
			t.Errorf("serve with limits and an empty config: err=%v\nstdout: %s\nstderr: %s", err, out, errOut)
		}
		// The guests themselves implement the ABI; so does the C example.
		good := buildGuest(t, "good", "DENY")
		if out, errOut, err := gatewayCmd(t, "plugin", "check", good); err != nil || !strings.Contains(out, "ok: implements storegate plugin ABI v1") {
			t.Errorf("plugin check of a good guest: %v\n%s%s", err, out, errOut)
		}
		if out, errOut, err := gatewayCmd(t, "plugin", "check", examplePlugin(t, "limits"), "--config", `{"max_value_bytes": 10}`); err != nil ||
			!strings.Contains(out, "ok: implements storegate plugin ABI v1") {
			t.Errorf("plugin check of limits.wasm: %v\n%s%s", err, out, errOut)
		}
		if out, errOut, err := gatewayCmd(t, "plugin", "check", examplePlugin(t, "limits"), "--config", `{}`); err == nil ||
			!strings.Contains(out, "problem: storegate_init failed") || !strings.Contains(out, "nothing to check") {
			t.Errorf("plugin check of limits.wasm with an empty config: %v\n%s%s", err, out, errOut)
		}
	})
}

// gatewayCmd runs the gateway binary with args to completion (at most a
// minute) and returns its stdout and stderr.
func gatewayCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("gateway %v did not exit within a minute:\n%s%s", args, out.String(), errb.String())
	}
	return out.String(), errb.String(), err
}

// gatewayConfig writes a configuration like startGateway's, with plugins
// ps, and returns its path.
func gatewayConfig(t *testing.T, p *pki, ec *etcdCluster, ps []config.PluginConfig) string {
	t.Helper()
	cfg := gatewayOpts{plugins: ps}.config(t, p, ec)
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "storegate.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---- 7. hot reload ------------------------------------------------------------

// TestPluginHotReload: a plugin's .wasm file is replaced (atomic rename)
// under a running gateway by a module that behaves differently, then by one
// that does not implement the ABI (kept out), then by the first again;
// requests switch behaviour each time, while concurrent writers never see
// an error other than the denials of the version in force.
func TestPluginHotReload(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	limitsWasm := mustRead(t, examplePlugin(t, "limits"))
	denyWasm := mustRead(t, buildGuest(t, "deny", "DENY", `TRIGGER="deny-me"`))
	brokenWasm := mustRead(t, buildGuest(t, "nohook", "NO_ON_REQUEST"))
	path := filepath.Join(t.TempDir(), "guard.wasm")
	if err := os.WriteFile(path, []byte(limitsWasm), 0o644); err != nil {
		t.Fatal(err)
	}
	gw, _ := pluginGateway(t, p, ec, nil, "", plug{
		Name: "guard", Path: path, Timeout: exampleTimeout,
		Match:  map[string][]string{"resources": {"kv"}, "actions": {"write"}, "keys": {"/hot/**"}},
		Config: map[string]any{"max_value_bytes": 16, "key_charset": "a-zA-Z0-9/_.-"},
	})
	kv := etcdKV(t, p, gw.addr, "web")
	const long = "twenty-byte-value-xx" // 20 bytes: over limits' 16; passes the deny guest
	const limitsReason = "plugin guard: value is 20 bytes, the limit is 16"
	const denyReason = "plugin guard: e2e guest: values starting with deny-me are refused"

	// Concurrent writers: "ok" passes every version; long is refused by
	// limits only; anything else is an error.
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		problems []string
		seqs     = make([]string, 2)
	)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("/hot/loop-%d-%d", g, i)
				if reason, err := putReason(kv, key, "ok"); err != nil {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("put %s ok: %v (%s)", key, err, reason))
					mu.Unlock()
				}
				reason, err := putReason(kv, key, long)
				mu.Lock()
				switch {
				case err == nil:
					seqs[g] += "A"
				case status.Code(err) == codes.PermissionDenied && reason == limitsReason:
					seqs[g] += "D"
				default:
					problems = append(problems, fmt.Sprintf("put %s long: %v (%s)", key, err, reason))
				}
				mu.Unlock()
			}
		}()
	}
	stopLoop := func() {
		if !stop.Swap(true) {
			wg.Wait()
		}
	}
	t.Cleanup(stopLoop)

	// expect polls until a put of value gets the answer wanted: allowed
	// (reason "") or refused with reason.
	expect := func(what, value, reason string) {
		t.Helper()
		var got string
		eventually(t, what, func() bool {
			r, err := putReason(kv, "/hot/probe", value)
			got = fmt.Sprintf("err=%v reason=%q", err, r)
			if reason == "" {
				return err == nil
			}
			return status.Code(err) == codes.PermissionDenied && r == reason
		}, func() string { return "last: " + got + "\n" + gw.logs.String() })
	}
	check := func(what, value, reason string) {
		t.Helper()
		r, err := putReason(kv, "/hot/probe", value)
		if reason == "" && err != nil || reason != "" && (status.Code(err) != codes.PermissionDenied || r != reason) {
			t.Errorf("%s: err=%v reason=%q, want %q", what, err, r, reason)
		}
	}
	loopDone := func(n int) {
		t.Helper()
		eventually(t, fmt.Sprintf("%d more puts of each writer", n), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(seqs[0]) >= n && len(seqs[1]) >= n
		}, func() string { return fmt.Sprint(seqs) })
	}

	check("limits: long", long, limitsReason)
	check("limits: deny-me", "deny-me", "")
	loopDone(5)

	writeAtomically(t, path, denyWasm)
	expect("the deny guest in force (long passes)", long, "")
	check("deny guest: deny-me", "deny-me-1", denyReason)
	check("deny guest: ok", "ok", "")
	waitLog(t, gw, `msg="plugin reloaded" plugin=guard`)
	mu.Lock()
	n := max(len(seqs[0]), len(seqs[1])) + 5
	mu.Unlock()
	loopDone(n)

	// A module that does not implement the ABI: refused, counted, logged;
	// the deny guest stays.
	before := byLabels(scrape(t, gw), "storegate_plugin_failures_total", "plugin", "kind")["guard/abi"]
	writeAtomically(t, path, brokenWasm)
	eventually(t, "the refused reload counted as abi", func() bool {
		return byLabels(scrape(t, gw), "storegate_plugin_failures_total", "plugin", "kind")["guard/abi"] == before+1
	}, gw.logs.String)
	waitLog(t, gw, "plugin reload failed, keeping the current version")
	if !strings.Contains(gw.logs.String(), `missing export \"storegate_on_request\"`) {
		t.Errorf("the refused reload's log does not say what is missing:\n%s", gw.logs.String())
	}
	check("after a refused reload: long", long, "")
	check("after a refused reload: deny-me", "deny-me-2", denyReason)

	writeAtomically(t, path, limitsWasm)
	expect("limits in force again (long refused)", long, limitsReason)
	check("limits again: deny-me", "deny-me-3", "")
	mu.Lock()
	n = max(len(seqs[0]), len(seqs[1])) + 5
	mu.Unlock()
	loopDone(n)
	stopLoop()

	if len(problems) > 0 {
		t.Errorf("the writers saw %d unexpected errors, the first: %s", len(problems), problems[0])
	}
	// Each writer saw limits, then the deny guest, then limits: never a
	// flip back and forth within a version switch.
	for g, s := range seqs {
		t.Logf("writer %d: %d puts of each value; the long one: %s", g, len(s), s)
		if !regexp.MustCompile(`^D+A+D+$`).MatchString(s) {
			t.Errorf("writer %d saw the long value refused (D) and allowed (A) in the order %s, want D+A+D+", g, s)
		}
	}
	if m := byLabels(scrape(t, gw), "storegate_plugin_failures_total", "plugin", "kind"); m["guard/trap"]+m["guard/timeout"]+m["guard/malformed"]+m["guard/memory"] != 0 {
		t.Errorf("failures counted across the reloads: %v", m)
	}
}
