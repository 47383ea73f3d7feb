package policy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/storegate/storegate/internal/bundletest"
)

// signingKey is an ES256 key pair, PEM-encoded as `openssl` writes them.
type signingKey struct{ private, public string }

func newSigningKey(tb testing.TB) signingKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	priv, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return signingKey{
		private: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv})),
		public:  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
	}
}

// buildBundle is the signed bundle of dir, as `gateway policy build` makes
// it.
func buildBundle(tb testing.TB, dir string, key signingKey, revision string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := Build(context.Background(), &buf, BuildOptions{Dir: dir, SigningKey: key.private, Algorithm: "ES256", Revision: revision}); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// rewriteBundle rewrites a bundle's tarball (bundletest.Rewrite).
func rewriteBundle(tb testing.TB, raw []byte, edit func(name string, content []byte) []byte, add ...bundletest.File) []byte {
	tb.Helper()
	out, err := bundletest.Rewrite(raw, edit, add...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// bundleNames lists a bundle's files.
func bundleNames(tb testing.TB, raw []byte) []string {
	var names []string
	rewriteBundle(tb, raw, func(name string, content []byte) []byte {
		names = append(names, name)
		return content
	})
	return names
}

// bundleServer serves one bundle at /bundles/policy.tar.gz with a strong
// ETag (its hash), answering 304 to a matching If-None-Match, and counts
// what it answered.
type bundleServer struct {
	*httptest.Server
	mu                sync.Mutex
	body              []byte
	etag              string
	ok, notModified   int
	sawIfNoneMatch    bool
	lastIfNoneMatched string
}

func newBundleServer(tb testing.TB, body []byte) *bundleServer {
	s := &bundleServer{}
	s.set(body)
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(s.Close)
	return s
}

func (s *bundleServer) set(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := sha256.Sum256(body)
	s.body, s.etag = body, `"`+hex.EncodeToString(h[:8])+`"`
}

func (s *bundleServer) url() string { return s.URL + "/bundles/policy.tar.gz" }

func (s *bundleServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path != "/bundles/policy.tar.gz" {
		http.NotFound(w, r)
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		s.sawIfNoneMatch, s.lastIfNoneMatched = true, inm
		for _, e := range strings.Split(inm, ",") {
			if strings.TrimSpace(e) == s.etag {
				s.notModified++
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
	}
	s.ok++
	w.Header().Set("ETag", s.etag)
	w.Header().Set("Content-Type", "application/gzip")
	w.Write(s.body)
}

// counts returns the 200 and 304 answers so far.
func (s *bundleServer) counts() (ok, notModified int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok, s.notModified
}
