package bundle

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/storegate/storegate/internal/testenv"
)

// swapLink points the symlink link at target atomically (a new link
// renamed over it), as Kubernetes updates a ConfigMap or Secret volume.
func swapLink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link+".new", link); err != nil {
		t.Fatal(err)
	}
}

// copyFiles copies files (from → name) into dir.
func copyFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for from, name := range files {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSIGHUPReloadsWithoutFileEvents: the policy directory and the
// identity files are reached through symlinked directories, and the links
// are swapped to new directories. The gateway's watches follow the links
// to the directories they pointed at when it started, which nothing
// touches afterwards, so no file event can tell it; SIGHUP reloads both at
// once: the new policy decides (a write only it allows reaches etcd) and
// the new SVID is presented.
func TestSIGHUPReloadsWithoutFileEvents(t *testing.T) {
	env := testenv.New(t)
	p := env.PKI("web")
	ec := env.Etcd(testenv.EtcdSpec{PKI: p})
	direct, err := ec.Client("etcd")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	root := t.TempDir()

	// Policies: current -> a (intentions A), b holds B.
	for dir, in := range map[string]string{"a": intentionsA, "b": intentionsB} {
		if err := os.Mkdir(filepath.Join(root, "policies-"+dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := testenv.Policies(filepath.Join(root, "policies-"+dir), in); err != nil {
			t.Fatal(err)
		}
	}
	policies := filepath.Join(root, "policies")
	if err := os.Symlink("policies-a", policies); err != nil {
		t.Fatal(err)
	}
	// Identity: ids -> ids-a (the PKI's gateway SVID), ids-b holds one
	// valid twice as long.
	if err := p.Issue("gateway-next", "/storegate", true, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	copyFiles(t, filepath.Join(root, "ids-a"), map[string]string{p.Cert("gateway"): "svid.pem", p.Key("gateway"): "svid-key.pem", p.Bundle(): "bundle.pem"})
	copyFiles(t, filepath.Join(root, "ids-b"), map[string]string{p.Cert("gateway-next"): "svid.pem", p.Key("gateway-next"): "svid-key.pem", p.Bundle(): "bundle.pem"})
	ids := filepath.Join(root, "ids")
	if err := os.Symlink("ids-a", ids); err != nil {
		t.Fatal(err)
	}

	cfg := env.GatewayConfig(p, policies, ec.Endpoints, "")
	cfg.Identity.Files.Cert = filepath.Join(ids, "svid.pem")
	cfg.Identity.Files.Key = filepath.Join(ids, "svid-key.pem")
	cfg.Identity.Files.Bundle = filepath.Join(ids, "bundle.pem")
	g := env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg, LogLevel: "info"})
	c := client(t, p, "web", g)

	before, err := status(t.Context(), g)
	if err != nil {
		t.Fatal(err)
	}
	if before.Policy.Kind != "dir" || before.Policy.Source != policies {
		t.Fatalf("/status policy %+v, want the directory %s", before.Policy, policies)
	}
	served := func() time.Time {
		t.Helper()
		pool := x509.NewCertPool()
		b, err := os.ReadFile(p.Bundle())
		if err != nil || !pool.AppendCertsFromPEM(b) {
			t.Fatalf("bundle: %v", err)
		}
		conn, err := tls.Dial("tcp", g.Etcd, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2"},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				cert, err := tls.LoadX509KeyPair(p.Cert("web"), p.Key("web"))
				return &cert, err
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].NotAfter
	}
	first := served()

	swapLink(t, "policies-b", policies)
	swapLink(t, "ids-b", ids)
	// Nothing was reloaded: B's write is still refused, the first SVID
	// still served.
	if err := put(t.Context(), c, "/b/before"); !isDenied(err) {
		t.Fatalf("Put /b/before: %v, want permission denied (policy A)", err)
	}
	if st, err := status(t.Context(), g); err != nil || st.Policy.Revision != before.Policy.Revision {
		t.Fatalf("/status before SIGHUP: %+v, %v; want revision %s", st.Policy, err, before.Policy.Revision)
	}

	if err := g.Proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var after gatewayStatus
	env.Eventually(30*time.Second, func(ctx context.Context) error {
		st, err := status(ctx, g)
		if err != nil {
			return err
		}
		if st.Policy.Revision == before.Policy.Revision || !st.Identity.NotAfter.After(before.Identity.NotAfter) {
			return fmt.Errorf("after SIGHUP: revision %s (was %s), SVID not after %v (was %v)", st.Policy.Revision,
				before.Policy.Revision, st.Identity.NotAfter, before.Identity.NotAfter)
		}
		after = st
		return nil
	})
	if rev, src, err := policyInfo(t.Context(), g); err != nil || rev != after.Policy.Revision || src != policies {
		t.Errorf("storegate_policy_info{revision=%q,source=%q} %v, want %s, %s", rev, src, err, after.Policy.Revision, policies)
	}
	if err := put(t.Context(), c, "/b/after"); err != nil || !inEtcd(t, direct, "/b/after") {
		t.Errorf("Put /b/after under policy B: %v", err)
	}
	if inEtcd(t, direct, "/b/before") {
		t.Error("/b/before reached etcd")
	}
	if got := served(); !got.After(first) {
		t.Errorf("handshake after SIGHUP presents an SVID valid until %v, want the new one (after %v)", got, first)
	}
	if err := g.Ready(t.Context()); err != nil {
		t.Errorf("/readyz after SIGHUP: %v", err)
	}
}
