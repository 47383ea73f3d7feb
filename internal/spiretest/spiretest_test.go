package spiretest_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/storegate/storegate/internal/spiretest"
)

// selfSelector is the unix:path selector of this test binary.
func selfSelector(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return spiretest.PathSelector(exe)
}

// fetch gets this process's X.509 context from the agent.
func fetch(t *testing.T, s *spiretest.SPIRE) *workloadapi.X509Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	xc, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(s.SocketPath))
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}
	return xc
}

// verify checks that the context's default SVID is id's and chains to the
// context's bundle, and returns its leaf.
func verify(t *testing.T, xc *workloadapi.X509Context, id spiffeid.ID) *x509.Certificate {
	t.Helper()
	svid := xc.DefaultSVID()
	if svid.ID != id {
		t.Fatalf("SVID for %s, want %s", svid.ID, id)
	}
	got, _, err := x509svid.Verify(svid.Certificates, xc.Bundles)
	if err != nil || got != id {
		t.Fatalf("SVID does not verify against the bundle: %v (%s)", err, got)
	}
	return svid.Certificates[0]
}

// waitFor polls the agent every second until cond holds for this process's
// X.509 context.
func waitFor(t *testing.T, s *spiretest.SPIRE, timeout time.Duration, what string, cond func(*workloadapi.X509Context) bool) *workloadapi.X509Context {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		xc := fetch(t, s)
		if cond(xc) {
			return xc
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(time.Second)
	}
}

// TestSVIDRotation registers this test binary, fetches its SVID through
// go-spiffe and sees the agent rotate it.
func TestSVIDRotation(t *testing.T) {
	t.Parallel()
	const ttl = 30 * time.Second
	s := spiretest.Start(t, spiretest.Options{SVIDTTL: ttl})
	id := s.ID("/spiretest/self")
	s.Register(t, id.String(), []string{selfSelector(t)}, []string{"localhost"})

	first := verify(t, fetch(t, s), id)
	if !slices.Equal(first.DNSNames, []string{"localhost"}) {
		t.Errorf("DNS SANs %v, want [localhost]", first.DNSNames)
	}
	// SPIRE backdates NotBefore by 10s.
	if life := first.NotAfter.Sub(first.NotBefore); life < ttl || life > ttl+15*time.Second {
		t.Errorf("SVID lifetime %v for a TTL of %v", life, ttl)
	}
	start := time.Now()
	xc := waitFor(t, s, 2*ttl, "rotated SVID", func(xc *workloadapi.X509Context) bool {
		return xc.DefaultSVID().Certificates[0].SerialNumber.Cmp(first.SerialNumber) != 0
	})
	next := verify(t, xc, id)
	if !next.NotAfter.After(first.NotAfter) {
		t.Errorf("rotated SVID expires %v, not after the first's %v", next.NotAfter, first.NotAfter)
	}
	if bytes.Equal(next.RawSubjectPublicKeyInfo, first.RawSubjectPublicKeyInfo) {
		t.Error("rotated SVID has the same key")
	}
	t.Logf("SVID rotated %v after the first fetch (TTL %v)", time.Since(start).Round(time.Second), ttl)
}

// TestCARotation sees the server's CA rotate: the next CA is published in
// the bundle first, then signs new SVIDs.
func TestCARotation(t *testing.T) {
	t.Parallel()
	const caTTL = time.Minute
	s := spiretest.Start(t, spiretest.Options{CATTL: caTTL})
	id := s.ID("/spiretest/ca-rotation")
	s.Register(t, id.String(), []string{selfSelector(t)}, nil)

	first := verify(t, fetch(t, s), id)
	start := time.Now()
	xc := waitFor(t, s, 2*caTTL, "SVID from a new CA", func(xc *workloadapi.X509Context) bool {
		return !bytes.Equal(xc.DefaultSVID().Certificates[0].AuthorityKeyId, first.AuthorityKeyId)
	})
	verify(t, xc, id)
	b, err := xc.Bundles.GetX509BundleForTrustDomain(s.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.X509Authorities()); n < 2 {
		t.Errorf("bundle has %d authorities after a CA rotation, want the old and the new", n)
	}
	t.Logf("CA rotated %v after the first fetch (ca_ttl %v); the bundle has %d authorities",
		time.Since(start).Round(time.Second), caTTL, len(b.X509Authorities()))
}

// TestAgentRestart fetches files with `spire-agent api fetch x509` (as
// etcdctl would use them), restarts the agent and fetches again.
func TestAgentRestart(t *testing.T) {
	t.Parallel()
	s := spiretest.Start(t, spiretest.Options{})
	id := s.ID("/spiretest/etcdctl")
	s.Register(t, id.String(), []string{s.FetchSelector()}, nil)

	before := readSVID(t, s.FetchX509(t, t.TempDir()), id)

	// The test binary has no entry of its own: unix:path tells it apart from
	// spire-agent although both run as root.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(s.SocketPath)); err == nil {
		t.Error("the test binary got an SVID registered for spire-agent's path")
	}

	s.StopAgent(t)
	// Registered while the agent is down: StartAgent waits for it.
	self := s.ID("/spiretest/during-restart")
	s.Register(t, self.String(), []string{selfSelector(t)}, nil)
	s.StartAgent(t)
	verify(t, fetch(t, s), self)
	after := readSVID(t, s.FetchX509(t, t.TempDir()), id)
	if after.SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Error("same SVID after restarting the agent")
	}
}

// readSVID checks the files from FetchX509 and returns the leaf.
func readSVID(t *testing.T, f spiretest.X509Files, id spiffeid.ID) *x509.Certificate {
	t.Helper()
	certs, err := x509svid.Load(f.Cert, f.Key)
	if err != nil {
		t.Fatalf("loading %s and %s: %v", f.Cert, f.Key, err)
	}
	if certs.ID != id {
		t.Fatalf("fetched SVID for %s, want %s", certs.ID, id)
	}
	roots := x509.NewCertPool()
	pemBytes, err := os.ReadFile(f.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("no certificates in %s", f.Bundle)
	}
	inter := x509.NewCertPool()
	for _, c := range certs.Certificates[1:] {
		inter.AddCert(c)
	}
	if _, err := certs.Certificates[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Fatalf("fetched SVID does not verify against %s: %v", f.Bundle, err)
	}
	return certs.Certificates[0]
}

// TestFederation federates two deployments and sees a workload of one get
// the other's bundle.
func TestFederation(t *testing.T) {
	t.Parallel()
	a := spiretest.Start(t, spiretest.Options{})
	b := spiretest.Start(t, spiretest.Options{TrustDomain: "other.org", FederateWith: []*spiretest.SPIRE{a}})
	id := a.ID("/spiretest/federated")
	a.Register(t, id.String(), []string{selfSelector(t)}, nil, "other.org")

	xc := fetch(t, a)
	verify(t, xc, id)
	got, err := xc.Bundles.GetX509BundleForTrustDomain(b.TrustDomain)
	if err != nil {
		t.Fatalf("no bundle for %s: %v", b.TrustDomain, err)
	}
	want := pemCerts(t, b.BundlePEM(t))
	if !slices.EqualFunc(got.X509Authorities(), want, (*x509.Certificate).Equal) {
		t.Errorf("federated bundle for %s differs from its server's", b.TrustDomain)
	}
	// The federated bundle is also in FetchX509's files.
	a.Register(t, "/spiretest/federated-files", []string{a.FetchSelector()}, nil, "spiffe://other.org")
	if f := a.FetchX509(t, t.TempDir()); len(f.Federated) != 1 {
		t.Errorf("federated bundle files %v, want one", f.Federated)
	}
}

func pemCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return certs
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
}
