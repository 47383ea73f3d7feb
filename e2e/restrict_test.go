package e2e

import (
	"strings"
	"testing"
)

// restrictive is the shipped example policy: web owns /app/** but not
// /app/secret/**, may use leases, locks under /app/locks/**, elections under
// /app/election/**, read status and the top level of /shared/.
func restrictivePolicy(t *testing.T) string {
	t.Helper()
	return copyPolicies(t, mustRead(t, repoRoot+"/policies/intentions.yaml"))
}

// TestRestrictivePolicy drives etcdctl as spiffe://example.org/web through
// the gateway under the shipped intentions.
func TestRestrictivePolicy(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{policyDir: restrictivePolicy(t)})
	direct := ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}
	web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}

	for _, kv := range [][2]string{{"/app/secret/token", "s3cr3t"}, {"/app/visible", "v"}, {"/other/x", "o"}, {"/shared/motd", "hi"}, {"/shared/a/b", "deep"}} {
		mustRun(t, direct, "", "put", kv[0], kv[1])
	}

	const denied = "Error: etcdserver: permission denied"
	cases := []struct {
		name    string
		stdin   string
		args    []string
		want    string // substring of stdout (allowed) or stderr (denied)
		wantErr bool
		notWant string // must not appear in stdout
	}{
		{name: "put allowed", args: []string{"put", "/app/x", "1"}, want: "OK"},
		{name: "get allowed", args: []string{"get", "/app/x"}, want: "/app/x\n1"},
		{name: "put outside /app", args: []string{"put", "/other/y", "2"}, want: denied, wantErr: true},
		{name: "put secret (deny wins)", args: []string{"put", "/app/secret/t", "x"}, want: denied, wantErr: true},
		{name: "get secret", args: []string{"get", "/app/secret/token"}, want: denied, wantErr: true},
		{name: "prefix read is filtered", args: []string{"get", "/app/", "--prefix", "--keys-only"}, want: "/app/visible", notWant: "secret"},
		{name: "prefix count is filtered", args: []string{"get", "/app/", "--prefix", "--count-only", "-w", "fields"}, want: `"Count" : 2`},
		{name: "get everything is filtered", args: []string{"get", "", "--from-key", "--keys-only"}, want: "/app/x", notWant: "/other/x"},
		{name: "delete a partly denied range", args: []string{"del", "/app/", "--prefix"}, want: denied, wantErr: true},
		{name: "txn with one forbidden key", stdin: "\nput /app/x 2\nput /other/z 3\n\n\n", args: []string{"txn"}, want: denied, wantErr: true},
		{name: "txn with a forbidden compare", stdin: "value(\"/other/x\") = \"o\"\n\nput /app/x 4\n\n\n", args: []string{"txn"}, want: denied, wantErr: true},
		{name: "txn allowed", stdin: "value(\"/app/x\") = \"1\"\n\nput /app/x 5\n\n\n", args: []string{"txn"}, want: "SUCCESS"},
		{name: "shared top level", args: []string{"get", "/shared/motd", "--print-value-only"}, want: "hi"},
		{name: "shared deeper", args: []string{"get", "/shared/a/b"}, want: denied, wantErr: true},
		{name: "lease grant", args: []string{"lease", "grant", "30"}, want: "granted with TTL(30s)"},
		{name: "lock allowed", args: []string{"lock", "/app/locks/l1", "echo", "held"}, want: "held"},
		{name: "lock denied", args: []string{"lock", "/other/l1", "echo", "held"}, want: denied, wantErr: true},
		{name: "member list", args: []string{"member", "list"}, want: denied, wantErr: true},
		{name: "endpoint status", args: []string{"endpoint", "status"}, want: "3.7.3"},
		{name: "compaction", args: []string{"compaction", "1"}, want: denied, wantErr: true},
		{name: "defrag", args: []string{"defrag"}, want: "permission denied", wantErr: true},
		{name: "snapshot", args: []string{"snapshot", "save", t.TempDir() + "/s.db"}, want: "permission denied", wantErr: true},
		{name: "auth status", args: []string{"auth", "status"}, want: denied, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, err := web.run(t, c.stdin, c.args...)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error %v\nstdout: %s\nstderr: %s", err, c.wantErr, stdout, stderr)
			}
			where := stdout
			if c.wantErr {
				where = stderr
			}
			if !strings.Contains(where, c.want) {
				t.Errorf("want %q in\n%s", c.want, where)
			}
			if c.notWant != "" && strings.Contains(stdout, c.notWant) {
				t.Errorf("%q leaked into\n%s", c.notWant, stdout)
			}
		})
	}

	// The denied txns changed nothing.
	if got := mustRun(t, direct, "", "get", "/other/z"); got != "" {
		t.Errorf("/other/z was written by a denied txn: %q", got)
	}
	if got := mustRun(t, direct, "", "get", "/app/x", "--print-value-only"); got != "5\n" {
		t.Errorf("/app/x = %q, want 5 (only the allowed txn applied)", got)
	}

	t.Run("watch denied", func(t *testing.T) {
		w := web.start(t, "watch", "/other/")
		w.waitExit(t)
		// The gateway sends the cancel_reason client/v3 maps to
		// rpctypes.ErrPermissionDenied (see RATIONALE.md).
		if got := w.errb.String() + w.out.String(); !strings.Contains(got, "watch was canceled (etcdserver: permission denied)") {
			t.Errorf("watch output: %q", got)
		}
	})
	t.Run("watch filtered", func(t *testing.T) {
		o := mustRun(t, direct, "", "put", "/app/w0", "start", "-w", "json")
		rev := revRe.FindStringSubmatch(o)[1]
		w := web.start(t, "watch", "/app/", "--prefix", "--rev="+rev)
		w.waitFor(t, "start")
		mustRun(t, direct, "", "put", "/app/secret/new", "hidden")
		mustRun(t, direct, "", "put", "/app/w1", "after")
		w.waitFor(t, "after")
		w.stop()
		if strings.Contains(w.out.String(), "hidden") || strings.Contains(w.out.String(), "secret") {
			t.Errorf("a secret event reached the watcher:\n%s", w.out.String())
		}
	})
	t.Run("elect denied", func(t *testing.T) {
		_, stderr, err := web.run(t, "", "elect", "/other/e", "p")
		if err == nil || !strings.Contains(stderr, "permission denied") {
			t.Errorf("elect outside /app/election: err=%v stderr=%s", err, stderr)
		}
	})
	t.Run("put with a lease holding a forbidden key", func(t *testing.T) {
		o := mustRun(t, direct, "", "lease", "grant", "60")
		lease := leaseRe.FindStringSubmatch(o)[1]
		mustRun(t, direct, "", "put", "/other/on-lease", "x", "--lease="+lease)
		_, stderr, err := web.run(t, "", "put", "/app/mine", "y", "--lease="+lease)
		if err == nil || !strings.Contains(stderr, denied) {
			t.Errorf("attaching to a lease with a forbidden key: err=%v stderr=%s", err, stderr)
		}
		_, stderr, err = web.run(t, "", "lease", "revoke", lease)
		if err == nil || !strings.Contains(stderr, "permission denied") {
			t.Errorf("revoking a lease with a forbidden key: err=%v stderr=%s", err, stderr)
		}
	})
}

func mustRun(t *testing.T, c ctl, stdin string, args ...string) string {
	t.Helper()
	stdout, stderr, err := c.run(t, stdin, args...)
	if err != nil {
		t.Fatalf("etcdctl %v: %v\n%s", args, err, stderr)
	}
	return stdout
}

// TestShadowMode: with `mode: shadow` the restrictive policy decides and
// logs, but blocks nothing.
func TestShadowMode(t *testing.T) {
	p := newPKI(t, "web")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{policyDir: restrictivePolicy(t), mode: "shadow"})
	web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}
	if out := mustRun(t, web, "", "put", "/other/shadow", "x"); out != "OK\n" {
		t.Errorf("put under shadow mode: %q", out)
	}
	waitLog(t, gw, `msg="shadow deny" caller=spiffe://example.org/web method=/etcdserverpb.KV/Put`)
	if got := mustRun(t, web, "", "get", "/other/shadow", "--print-value-only"); got != "x\n" {
		t.Errorf("get under shadow mode: %q", got)
	}
}
