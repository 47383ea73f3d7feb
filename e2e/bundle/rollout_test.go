package bundle

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
)

// Revision A lets web write /app/**; B also /b/**. evil, which no good
// bundle holds, lets web write /evil/** too.
const (
	intentionsA = `intentions:
  - name: web-app
    source: "spiffe://example.org/web"
    resources: [kv]
    actions: [read, write]
    keys: ["/app/**"]
    effect: allow
`
	intentionsB = intentionsA + `  - name: web-b
    source: "spiffe://example.org/web"
    resources: [kv]
    actions: [read, write]
    keys: ["/b/**"]
    effect: allow
`
	intentionsEvil = intentionsB + `  - name: web-evil
    source: "spiffe://example.org/web"
    resources: [kv]
    actions: [read, write]
    keys: ["/evil/**"]
    effect: allow
`
)

// rollout is what TestBundleRollout runs against.
type rollout struct {
	t   *testing.T
	env *testenv.Env
	pki *testenv.PKI
	ec  *testenv.Etcd
	srv *bundleServer
	key signingKey
	gws []*testenv.Gateway
}

// bundleConfig is a replica's configuration: policy from the bundle
// server, verified with key, polled every 200–400 ms, persisted in its own
// directory.
func (r *rollout) bundleConfig(persist string) config.Config {
	cfg := r.env.GatewayConfig(r.pki, "", r.ec.Endpoints, "")
	cfg.Policy.Dir = ""
	cfg.Policy.Bundle = &config.BundleConfig{
		URL:          r.srv.url(),
		Verification: config.BundleVerification{PublicKey: r.key.public},
		Polling:      config.BundlePolling{MinDelay: config.Duration(200 * time.Millisecond), MaxDelay: config.Duration(400 * time.Millisecond)},
		Timeout:      config.Duration(10 * time.Second),
		PersistDir:   persist,
	}
	return cfg
}

// eachEnforces waits until every replica's /status and metric say it
// enforces revision.
func (r *rollout) eachEnforces(revision string, gws ...*testenv.Gateway) {
	r.t.Helper()
	for _, g := range gws {
		r.env.Eventually(60*time.Second, func(ctx context.Context) error {
			return enforces(ctx, g, revision, r.srv.url())
		})
	}
}

// failures is a replica's storegate_policy_reloads_total{outcome="failure"}.
func failures(ctx context.Context, g *testenv.Gateway) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return g.Metric(ctx, "storegate_policy_reloads_total", map[string]string{"outcome": "failure"})
}

// TestBundleRollout rolls bundle revisions out to three replicas through a
// real bundle server and checks what each replica enforces, by its
// /status, by storegate_policy_info and by real writes through it, read
// back from etcd directly.
func TestBundleRollout(t *testing.T) {
	env := testenv.New(t)
	r := &rollout{t: t, env: env, pki: env.PKI("web")}
	r.ec = env.Etcd(testenv.EtcdSpec{PKI: r.pki})
	direct, err := r.ec.Client("etcd")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	r.key = newSigningKey(t, "bundle")
	r.srv = newBundleServer(t, env.Addr())
	bundleA := build(t, r.key, "A", intentionsA)
	bundleB := build(t, r.key, "B", intentionsB)
	r.srv.set(bundleA)
	r.srv.start(t)

	persist := make([]string, 3)
	for i := range persist {
		persist[i] = t.TempDir()
		r.gws = append(r.gws, env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: r.bundleConfig(persist[i]), LogLevel: "info"}))
	}
	r.eachEnforces("A", r.gws...)

	// writes checks, through every replica, that web may write /app/ and
	// may (or may not) write under prefix, and what etcd then holds.
	writes := func(stage, prefix string, allowed bool) {
		t.Helper()
		for i, g := range r.gws {
			c := client(t, r.pki, "web", g)
			if err := put(t.Context(), c, "/app/"+stage+strconv.Itoa(i)); err != nil {
				t.Errorf("%s: replica %d: Put /app/: %v", stage, i, err)
			}
			key := prefix + stage + strconv.Itoa(i)
			err := put(t.Context(), c, key)
			switch {
			case allowed && err != nil:
				t.Errorf("%s: replica %d: Put %s: %v, want allowed", stage, i, key, err)
			case !allowed && !isDenied(err):
				t.Errorf("%s: replica %d: Put %s: %v, want permission denied", stage, i, key, err)
			}
			if got := inEtcd(t, direct, key); got != allowed {
				t.Errorf("%s: replica %d: %s in etcd: %v, want %v", stage, i, key, got, allowed)
			}
		}
	}
	writes("a", "/b/", false)

	// Roll B out: every replica picks it up by polling.
	r.srv.set(bundleB)
	start := time.Now()
	r.eachEnforces("B", r.gws...)
	t.Logf("revision B on all %d replicas %v after it was served", len(r.gws), time.Since(start).Round(time.Millisecond))
	writes("b", "/b/", true)
	// Unchanged, the bundle is not downloaded again: the polls carry its
	// ETag and the server answers 304.
	ok, _, _ := r.srv.counts()
	env.Eventually(30*time.Second, func(context.Context) error {
		if _, nm, inm := r.srv.counts(); nm < 2*len(r.gws) || inm < nm {
			return fmt.Errorf("%d × 304 to %d requests with If-None-Match, want polls answered 304", nm, inm)
		}
		return nil
	})
	ok2, nm, inm := r.srv.counts()
	if ok2 != ok {
		t.Errorf("the unchanged bundle was downloaded %d more times", ok2-ok)
	}
	t.Logf("bundle server: %d × 200, %d × 304, %d requests with If-None-Match", ok2, nm, inm)

	// Refused by all, B kept: a file of B changed after signing, and a
	// bundle signed with another key (which would allow /evil/).
	tampered := swapFile(t, bundleB, build(t, r.key, "B", intentionsEvil), "/data.json")
	otherKey := build(t, newSigningKey(t, "other"), "evil", intentionsEvil)
	for _, bad := range []struct {
		name, want string
		raw        []byte
	}{
		{"tampered", "digest mismatch", tampered},
		{"other key", "verify", otherKey},
	} {
		before := make([]float64, len(r.gws))
		for i, g := range r.gws {
			if before[i], err = failures(t.Context(), g); err != nil {
				t.Fatal(err)
			}
		}
		r.srv.set(bad.raw)
		for i, g := range r.gws {
			env.Eventually(60*time.Second, func(ctx context.Context) error {
				n, err := failures(ctx, g)
				if err != nil {
					return err
				}
				st, err := status(ctx, g)
				if err != nil {
					return err
				}
				if n <= before[i] || !strings.Contains(st.Policy.LastError, bad.want) {
					return fmt.Errorf("%s: replica %d: %v failures (was %v), last error %q; want the refusal counted and shown",
						bad.name, i, n, before[i], st.Policy.LastError)
				}
				return nil
			})
			if err := enforces(t.Context(), g, "B", r.srv.url()); err != nil {
				t.Errorf("%s: replica %d: %v", bad.name, i, err)
			}
		}
		writes(strings.ReplaceAll(bad.name, " ", "-"), "/evil/", false)
		writes(strings.ReplaceAll(bad.name, " ", "-"), "/b/", true)
	}

	// The server goes down; a replica restarted meanwhile serves the
	// bundle it persisted, verified again, and is ready.
	r.srv.set(bundleB)
	r.srv.stop()
	if err := r.gws[0].Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := enforces(t.Context(), r.gws[0], "B", r.srv.url()); err != nil {
		t.Error(err)
	}
	if logs := r.gws[0].Proc.Logs(); !strings.Contains(logs, "policy loaded from the persisted bundle") {
		t.Error("the restarted replica's log does not say it loaded the persisted bundle")
	}
	writes("restarted", "/b/", true)

	// A fresh replica with nothing persisted, the server still down: not
	// ready, and every request is denied, for the reason that no policy
	// is loaded.
	fresh := env.LaunchGateway(testenv.GatewaySpec{Bin: gatewayBin, Config: r.bundleConfig(t.TempDir()), LogLevel: "info"})
	env.Eventually(60*time.Second, func(ctx context.Context) error {
		if err := fresh.Ready(ctx); err == nil || !strings.Contains(err.Error(), "no policy loaded yet") {
			return fmt.Errorf("/readyz: %v, want 503 saying no policy is loaded", err)
		}
		return nil
	})
	fc := client(t, r.pki, "web", fresh)
	if err := put(t.Context(), fc, "/app/fresh"); !isDenied(err) {
		t.Errorf("fresh replica: Put /app/fresh: %v, want permission denied", err)
	}
	if inEtcd(t, direct, "/app/fresh") {
		t.Error("fresh replica: /app/fresh reached etcd")
	}
	env.Eventually(30*time.Second, func(context.Context) error {
		if !strings.Contains(fresh.Proc.Logs(), "no policy loaded") {
			return fmt.Errorf("the fresh replica's log does not give the denial's reason")
		}
		return nil
	})
	st, err := status(t.Context(), fresh)
	if err != nil {
		t.Fatal(err)
	}
	if st.Policy.Active || st.Policy.Revision != "none" || st.Policy.LastError == "" {
		t.Errorf("fresh replica /status policy %+v, want inactive, none, the fetch error", st.Policy)
	}
	if rev, _, err := policyInfo(t.Context(), fresh); err != nil || rev != "none" {
		t.Errorf("fresh replica storegate_policy_info revision %q, %v; want none", rev, err)
	}
	if err := fresh.Ready(t.Context()); err == nil {
		t.Error("fresh replica became ready with no policy")
	}

	// The server back: the fresh replica gets B and becomes ready.
	r.srv.start(t)
	if err := fresh.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.eachEnforces("B", fresh)
	if err := put(t.Context(), fc, "/b/fresh"); err != nil || !inEtcd(t, direct, "/b/fresh") {
		t.Errorf("fresh replica after the server came back: Put /b/fresh: %v", err)
	}
}
