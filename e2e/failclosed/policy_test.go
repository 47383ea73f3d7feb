package failclosed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/internal/testenv"
)

// appIntentions let caller "app" read and write its own keys, /app/…, and
// nothing else.
const appIntentions = `intentions:
  - name: app-own-keys
    source: "spiffe://example.org/app"
    resources: ["kv"]
    actions: ["read", "write"]
    keys: ["/app/**"]
    effect: allow
`

// TestPolicyFaultsFailClosed proves what a broken policy directory at run
// time does. Garbage in intentions.yaml, authz.rego truncated mid-file, and
// authz.rego made unreadable (a dangling symlink) each fail to reload: the
// failure is counted (storegate_policy_reloads_total{outcome="failure"})
// and logged, the last good version stays, and neither half of the new
// files is used: a write the policy allows still succeeds, one it denies is
// still denied and absent from etcd. The directory removed altogether
// leaves no policy: every request is denied, and logged as such, while
// /readyz stays ready (the policy is not a readiness check: one bad push
// would otherwise take every replica out at once; denying is the safe
// side).
func TestPolicyFaultsFailClosed(t *testing.T) {
	env := testenv.New(t)
	p := env.PKI("app")
	ec := env.Etcd(testenv.EtcdSpec{PKI: p})
	dir := env.Policies(appIntentions)
	cfg := env.GatewayConfig(p, dir, ec.Endpoints, "")
	cfg.Debug.Pprof = true
	g := env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg})
	kv, _ := kvClient(t, p, "app", g.Etcd)
	direct := env.MembersClient(ec, "etcd")

	// stays enforces the policy: /app/<stage> is written, /other/<stage>
	// refused with PermissionDenied and not in etcd.
	stays := func(stage string, allowed bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/app/" + stage), Value: []byte("v")})
		if allowed && err != nil {
			t.Errorf("%s: Put /app/%s (allowed by the last good policy): %v", stage, stage, err)
		}
		if !allowed && status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: Put /app/%s with no policy: %v, want PermissionDenied", stage, stage, err)
		}
		_, err = kv.Put(ctx, &pb.PutRequest{Key: []byte("/other/" + stage), Value: []byte("v")})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: Put /other/%s (denied by policy): %v, want PermissionDenied", stage, stage, err)
		}
		inEtcd(ctx, t, direct, stage, map[string]bool{"/app/" + stage: allowed, "/other/" + stage: false})
	}
	// failures reads /metrics under its own bound: on a loaded machine a
	// race-built gateway takes seconds to render it, longer than one try of
	// Eventually.
	failures := func(context.Context) (float64, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		return g.Metric(ctx, "storegate_policy_reloads_total", map[string]string{"outcome": "failure"})
	}
	// waitCount waits until counter passes n.
	waitCount := func(what string, counter func(context.Context) (float64, error), n float64) {
		t.Helper()
		err := testenv.Eventually(t.Context(), 90*time.Second, func(ctx context.Context) error {
			v, err := counter(ctx)
			if err == nil && v <= n {
				err = fmt.Errorf("%s: %v, want more than %v", what, v, n)
			}
			return err
		})
		if err != nil {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			_, dump, derr := adminGet(ctx, g, "/debug/pprof/goroutine?debug=2")
			t.Fatalf("%v\ngoroutines (%v):\n%s", err, derr, dump)
		}
	}
	stays("start", true)
	good, err := os.ReadFile(filepath.Join(dir, "intentions.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	authz := filepath.Join(dir, "authz.rego")
	rego, err := os.ReadFile(authz)
	if err != nil {
		t.Fatal(err)
	}
	faults := []struct {
		name         string
		break_, mend func() error
	}{
		{"garbage-intentions",
			func() error {
				return os.WriteFile(filepath.Join(dir, "intentions.yaml"), []byte("intentions: [{{{ not yaml\x00"), 0o644)
			},
			func() error { return os.WriteFile(filepath.Join(dir, "intentions.yaml"), good, 0o644) }},
		{"truncated-authz",
			func() error { return os.WriteFile(authz, rego[:len(rego)/2], 0o644) },
			func() error { return os.WriteFile(authz, rego, 0o644) }},
		{"unreadable-authz",
			func() error {
				if err := os.Remove(authz); err != nil {
					return err
				}
				return os.Symlink(filepath.Join(dir, "gone", "authz.rego"), authz)
			},
			func() error {
				if err := os.Remove(authz); err != nil {
					return err
				}
				return os.WriteFile(authz, rego, 0o644)
			}},
	}
	for _, f := range faults {
		n, err := failures(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.break_(); err != nil {
			t.Fatal(err)
		}
		waitCount(f.name+": failed reloads", failures, n)
		stays(f.name, true)
		// Mended, the files are the last good version again: nothing to
		// reload (the revision is the one in use), and nothing changes.
		if err := f.mend(); err != nil {
			t.Fatal(err)
		}
		stays(f.name+"-mended", true)
	}
	if logs := g.Proc.Logs(); !strings.Contains(logs, "policy reload failed, keeping the last good version") {
		t.Errorf("the gateway's log does not report the failed reloads")
	}

	// The directory removed: no policy, every op denied.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	// (/app/probe is written until the gateway notices the removal;
	// stays checks the store once every op is denied.)
	env.Eventually(30*time.Second, func(ctx context.Context) error {
		_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/app/probe"), Value: []byte("v")})
		if status.Code(err) != codes.PermissionDenied {
			return fmt.Errorf("Put /app/probe after the policy directory was removed: %v, want PermissionDenied", err)
		}
		return nil
	})
	stays("removed", false)
	if err := g.Ready(t.Context()); err != nil {
		t.Errorf("/readyz with no policy: %v, want ready (denying everything)", err)
	}
	if logs := g.Proc.Logs(); !strings.Contains(logs, "no policy") {
		t.Errorf("the gateway's log does not say that no policy is loaded")
	}
}
