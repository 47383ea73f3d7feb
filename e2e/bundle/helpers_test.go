package bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/storegate/storegate/internal/bundletest"
	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/policy"
)

// bundlePath is where the bundle server serves its bundle.
const bundlePath = "/bundles/storegate.tar.gz"

// bundleServer is a real HTTP bundle server on a fixed loopback address,
// so that it can stop and start again where the replicas look for it. It
// serves one bundle with a strong ETag (a hash of its bytes), answers 304
// to an If-None-Match that names it, and counts what it answered.
type bundleServer struct {
	addr string

	mu          sync.Mutex
	srv         *http.Server
	body        []byte
	etag        string
	ok          int // 200s
	notModified int // 304s
	ifNoneMatch int // requests that carried If-None-Match
}

func newBundleServer(t *testing.T, addr string) *bundleServer {
	s := &bundleServer{addr: addr}
	t.Cleanup(s.stop)
	return s
}

func (s *bundleServer) url() string { return "http://" + s.addr + bundlePath }

// set makes body the bundle served from now on.
func (s *bundleServer) set(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := sha256.Sum256(body)
	s.body, s.etag = body, `"`+hex.EncodeToString(h[:12])+`"`
}

// start listens on the server's address.
func (s *bundleServer) start(t *testing.T) {
	t.Helper()
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatalf("bundle server: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(lis)
}

// stop closes the listener and every connection: the server is down.
func (s *bundleServer) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (s *bundleServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != bundlePath {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	body, etag := s.body, s.etag
	inm := r.Header.Get("If-None-Match")
	if inm != "" {
		s.ifNoneMatch++
	}
	match := false
	for _, e := range strings.Split(inm, ",") {
		match = match || strings.TrimSpace(e) == etag
	}
	if match {
		s.notModified++
	} else {
		s.ok++
	}
	s.mu.Unlock()
	w.Header().Set("ETag", etag)
	if match {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Write(body)
}

// counts is what the server answered so far.
func (s *bundleServer) counts() (ok, notModified, ifNoneMatch int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok, s.notModified, s.ifNoneMatch
}

// signingKey is an RSA key pair in files, as `openssl genrsa` and
// `openssl rsa -pubout` write them: what `gateway policy build
// --signing-key` and policy.bundle.verification.public_key take.
type signingKey struct{ private, public string }

func newSigningKey(t *testing.T, name string) signingKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sk := signingKey{private: filepath.Join(dir, name+".pem"), public: filepath.Join(dir, name+".pub")}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sk.private, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sk.public, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		t.Fatal(err)
	}
	return sk
}

// build is the signed bundle of a policy directory with intentions, as
// `gateway policy build --signing-key KEY --revision REV` writes it.
func build(t *testing.T, key signingKey, revision, intentions string) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := testenv.Policies(dir, intentions); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := policy.Build(t.Context(), &buf, policy.BuildOptions{Dir: dir, SigningKey: key.private, Revision: revision}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gatewayStatus is the part of /status the tests read.
type gatewayStatus struct {
	Policy struct {
		Revision  string `json:"revision"`
		Source    string `json:"source"`
		Kind      string `json:"kind"`
		Active    bool   `json:"active"`
		LastError string `json:"last_error"`
		Persisted string `json:"persisted"`
	} `json:"policy"`
	Identity struct {
		SVID     string    `json:"svid"`
		NotAfter time.Time `json:"not_after"`
	} `json:"identity"`
	Upstreams struct {
		Etcd *struct {
			Answers bool `json:"answers"`
		} `json:"etcd"`
	} `json:"upstreams"`
}

// status reads a gateway's /status.
func status(ctx context.Context, g *testenv.Gateway) (gatewayStatus, error) {
	var st gatewayStatus
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.Admin+"/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("/status: %s", resp.Status)
	}
	return st, json.Unmarshal(b, &st)
}

// policyInfo is the one storegate_policy_info series of a gateway: its
// revision and source.
func policyInfo(ctx context.Context, g *testenv.Gateway) (revision, source string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	m, err := g.Metrics(ctx)
	if err != nil {
		return "", "", err
	}
	fam := m["storegate_policy_info"]
	if fam == nil || len(fam.GetMetric()) != 1 {
		return "", "", fmt.Errorf("storegate_policy_info: %v, want exactly one series", fam)
	}
	s := fam.GetMetric()[0]
	if s.GetGauge().GetValue() != 1 {
		return "", "", fmt.Errorf("storegate_policy_info = %v, want 1", s.GetGauge().GetValue())
	}
	for _, l := range s.GetLabel() {
		switch l.GetName() {
		case "revision":
			revision = l.GetValue()
		case "source":
			source = l.GetValue()
		}
	}
	return revision, source, nil
}

// enforces is nil once g's /status and storegate_policy_info both say it
// enforces revision from source.
func enforces(ctx context.Context, g *testenv.Gateway, revision, source string) error {
	st, err := status(ctx, g)
	if err != nil {
		return err
	}
	if st.Policy.Revision != revision || st.Policy.Source != source || !st.Policy.Active {
		return fmt.Errorf("%s /status: policy %+v, want revision %s from %s, active", g.Admin, st.Policy, revision, source)
	}
	rev, src, err := policyInfo(ctx, g)
	if err != nil {
		return err
	}
	if rev != revision || src != source {
		return fmt.Errorf("%s storegate_policy_info{revision=%q,source=%q}, want %q, %q", g.Admin, rev, src, revision, source)
	}
	return nil
}

// client is a client/v3 client of one gateway, as caller.
func client(t *testing.T, p *testenv.PKI, caller string, g *testenv.Gateway) *clientv3.Client {
	t.Helper()
	tc, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: p.Cert(caller), Key: p.Key(caller), CA: p.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + g.Etcd}, TLS: tc,
		DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// put writes key through c, within a bound.
func put(ctx context.Context, c *clientv3.Client, key string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := c.Put(ctx, key, "v")
	return err
}

// inEtcd reports whether key is in etcd, read directly.
func inEtcd(t *testing.T, direct *clientv3.Client, key string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := direct.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return len(r.Kvs) == 1
}

// isDenied reports whether err is etcd's permission denied.
func isDenied(err error) bool { return errors.Is(err, rpctypes.ErrPermissionDenied) }

// swapFile is bundle raw with its file name replaced by donor's: a bundle
// changed after it was signed.
func swapFile(t *testing.T, raw, donor []byte, name string) []byte {
	t.Helper()
	var content []byte
	walkBundle(t, donor, func(n string, c []byte) []byte {
		if n == name {
			content = c
		}
		return c
	})
	if content == nil {
		t.Fatalf("the donor bundle has no %s", name)
	}
	var swapped bool
	out := walkBundle(t, raw, func(n string, c []byte) []byte {
		if n == name {
			swapped = !bytes.Equal(c, content)
			return content
		}
		return c
	})
	if !swapped {
		t.Fatalf("%s: nothing changed", name)
	}
	return out
}

// walkBundle rewrites a bundle's tarball (bundletest.Rewrite).
func walkBundle(t *testing.T, raw []byte, edit func(name string, content []byte) []byte) []byte {
	t.Helper()
	out, err := bundletest.Rewrite(raw, edit)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
