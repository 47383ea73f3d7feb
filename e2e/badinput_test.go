package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/mtls"
)

// TestRefusedHandshakes: callers without a valid SVID of a configured trust
// domain never reach etcd, and the gateway says why.
func TestRefusedHandshakes(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{})

	odd := t.TempDir()
	issue := func(caDir, out string, req mtls.IssueRequest) {
		req.Out = out
		if req.ID.IsZero() {
			req.ID = spiffeid.RequireFromPath(trustDomain, "/"+out)
		}
		if _, _, err := mtls.Issue(caDir, req); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{out + ".pem", out + "-key.pem"} {
			b := mustRead(t, filepath.Join(caDir, f))
			if err := os.WriteFile(filepath.Join(odd, f), []byte(b), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	issue(p.dir, "no-uri-san", mtls.IssueRequest{TTL: time.Hour, Modify: func(c *x509.Certificate) { c.URIs = nil }})
	issue(p.dir, "expired", mtls.IssueRequest{NotBefore: time.Now().Add(-2 * time.Hour), TTL: time.Hour})
	otherTD := t.TempDir()
	if err := mtls.InitCA(otherTD, spiffeid.RequireTrustDomainFromString("other.org")); err != nil {
		t.Fatal(err)
	}
	issue(otherTD, "other-trust-domain", mtls.IssueRequest{ID: spiffeid.RequireFromString("spiffe://other.org/web"), TTL: time.Hour})
	sameNameOtherCA := t.TempDir()
	if err := mtls.InitCA(sameNameOtherCA, trustDomain); err != nil {
		t.Fatal(err)
	}
	issue(sameNameOtherCA, "wrong-ca", mtls.IssueRequest{TTL: time.Hour})

	cases := []struct{ who, reason string }{
		{"", "no certificate"},
		{"no-uri-san", "no SPIFFE ID"},
		{"expired", "expired"},
		{"other-trust-domain", "untrusted trust domain"},
		{"wrong-ca", "unknown authority"},
	}
	for _, c := range cases {
		name := c.who
		if name == "" {
			name = "no-certificate"
		}
		t.Run(name, func(t *testing.T) {
			cl := ctl{p: p, endpoint: "https://" + gw.addr, who: c.who, certDir: odd, timeout: "3s"}
			stdout, stderr, err := cl.run(t, "", "put", "/refused/"+name, "x")
			if err == nil {
				t.Fatalf("put with %s succeeded: %s", name, stdout)
			}
			want := "reason=" + c.reason
			if strings.Contains(c.reason, " ") {
				want = `reason="` + c.reason + `"`
			}
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(gw.logs.String(), want) {
				if time.Now().After(deadline) {
					t.Fatalf("gateway did not log %s; etcdctl said %s", want, stderr)
				}
				time.Sleep(20 * time.Millisecond) // polling the log, bounded by the deadline
			}
		})
	}
	// Nothing reached etcd.
	out := mustRun(t, ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}, "", "get", "/refused/", "--prefix", "--count-only", "-w", "fields")
	if !strings.Contains(out, `"Count" : 0`) {
		t.Errorf("refused callers wrote keys:\n%s", out)
	}
}

// TestOversizedRequest: a request over the limit gets a clear error and the
// gateway keeps serving.
func TestOversizedRequest(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{})
	c := ctl{p: p, endpoint: "https://" + gw.addr, who: "admin"}
	big := strings.Repeat("x", 3<<20)
	_, stderr, err := c.run(t, big, "put", "/big")
	if err == nil || !strings.Contains(stderr, "ResourceExhausted") && !strings.Contains(stderr, "larger than max") {
		t.Fatalf("3 MiB put: err=%v stderr=%s", err, stderr)
	}
	if got := mustRun(t, c, "", "put", "/small", "ok"); got != "OK\n" {
		t.Errorf("after an oversized request: %q", got)
	}
}

// runGateway runs `gateway serve` to completion (for start-up failures).
func runGateway(t *testing.T, p *pki, ec *etcdCluster, policyDir string) (string, error) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	body := "listen: {etcd: " + freePort(t) + ", admin: " + freePort(t) + "}\n" +
		"identity:\n  files: {cert: " + p.path("gateway.pem") + ", key: " + p.path("gateway-key.pem") + ", bundle: " + p.bundle() + "}\n" +
		"  trust_domains: [example.org]\n" +
		"upstreams:\n  etcd:\n    endpoints: [" + ec.endpoints[0] + "]\n" +
		"    tls: {cert: " + p.path("gateway.pem") + ", key: " + p.path("gateway-key.pem") + ", ca: " + p.bundle() + "}\n" +
		"policy: {dir: " + policyDir + "}\n"
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, gatewayBin, "serve", "--config", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestPolicyFailures: an empty policy directory denies everything and says
// so; broken Rego refuses to start, naming file and line; broken Rego on
// reload keeps the last good policy.
func TestPolicyFailures(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)

	t.Run("empty directory denies all", func(t *testing.T) {
		gw := startGateway(t, p, ec, gatewayOpts{policyDir: t.TempDir()})
		if !strings.Contains(gw.logs.String(), "every request is denied") {
			t.Errorf("no start-up warning:\n%s", gw.logs.String())
		}
		_, stderr, err := ctl{p: p, endpoint: "https://" + gw.addr, who: "admin"}.run(t, "", "get", "/x")
		if err == nil || !strings.Contains(stderr, "Error: etcdserver: permission denied") {
			t.Errorf("get under no policy: err=%v stderr=%s", err, stderr)
		}
	})

	t.Run("broken rego at start-up", func(t *testing.T) {
		dir := copyPolicies(t, allowAll)
		if err := os.WriteFile(filepath.Join(dir, "broken.rego"), []byte("package storegate.authz\n\nallow if {\n  input.op.key ==\n}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := runGateway(t, p, ec, dir)
		if err == nil {
			t.Fatalf("gateway started with broken Rego:\n%s", out)
		}
		if !strings.Contains(out, "broken.rego:") {
			t.Errorf("start-up error does not name file and line:\n%s", out)
		}
	})

	t.Run("broken intentions at start-up", func(t *testing.T) {
		dir := copyPolicies(t, "intentions:\n  - name: x\n    sauce: typo\n")
		out, err := runGateway(t, p, ec, dir)
		if err == nil || !strings.Contains(out, "intentions.yaml") {
			t.Errorf("gateway with a bad intentions file: err=%v\n%s", err, out)
		}
	})

	t.Run("broken rego on reload keeps the last good policy", func(t *testing.T) {
		dir := restrictivePolicy(t)
		gw := startGateway(t, p, ec, gatewayOpts{policyDir: dir})
		web := ctl{p: p, endpoint: "https://" + gw.addr, who: "web"}
		mustRun(t, web, "", "put", "/app/r", "1")
		if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte("package storegate.authz\nallow if {\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		waitLog(t, gw, "policy reload failed, keeping the last good version")
		if !strings.Contains(gw.logs.String(), "authz.rego:") {
			t.Errorf("reload error does not name the file:\n%s", gw.logs.String())
		}
		mustRun(t, web, "", "put", "/app/r", "2") // still allowed by the old policy
		if _, stderr, err := web.run(t, "", "put", "/other/r", "1"); err == nil || !strings.Contains(stderr, "permission denied") {
			t.Errorf("after a failed reload /other/r: err=%v %s", err, stderr)
		}
		// A good change is picked up.
		if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(mustRead(t, filepath.Join(repoRoot, "policies", "authz.rego"))), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "intentions.yaml"), []byte(allowAll), 0o644); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, _, err := web.run(t, "", "put", "/other/r", "1")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the fixed policy was not picked up:\n%s", gw.logs.String())
			}
		}
	})
}

func waitLog(t *testing.T, gw *gateway, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(gw.logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("gateway never logged %q:\n%s", want, gw.logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling the log, bounded by the deadline
	}
}
