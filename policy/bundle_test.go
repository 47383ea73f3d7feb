package policy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/internal/bundletest"
)

// reloads records what OnReload heard.
type reloads struct {
	mu       sync.Mutex
	ok, fail int
}

func (r *reloads) record(_ string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.fail++
	} else {
		r.ok++
	}
}

func (r *reloads) counts() (ok, fail int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok, r.fail
}

// bundleEngine loads an engine on the bundle at url.
func bundleEngine(t *testing.T, url string, key signingKey, persist string, r *reloads) *Engine {
	t.Helper()
	cfg := Config{Bundle: &BundleConfig{URL: url, PublicKey: key.public, Algorithm: "ES256", PersistDir: persist},
		Logger: discardLogger(), EvalTimeout: mustLoadTimeout}
	if r != nil {
		cfg.OnReload = r.record
	}
	e, err := Load(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// allowed reports whether e allows caller to write key.
func allowed(t *testing.T, e *Engine, caller gate.Identity, key string) bool {
	t.Helper()
	d, err := e.Authorize(context.Background(), caller, kvOp(gate.ActionWrite, key))
	return err == nil && d.Effect == gate.Allow
}

// A bundle of a policy directory is that directory's policy: its Rego
// (not its tests) and its intentions (data.intentions), compiled by the
// same code, deciding the same.
func TestBundleSourceIsTheDirectorysPolicy(t *testing.T) {
	key := newSigningKey(t)
	raw := buildBundle(t, shipped, key, "")
	names := bundleNames(t, raw)
	for _, want := range []string{"/data.json", "/.signatures.json", "/.manifest"} {
		if !slices.Contains(names, want) {
			t.Errorf("bundle files %v lack %s", names, want)
		}
	}
	srv := newBundleServer(t, raw)
	e := bundleEngine(t, srv.url(), key, "", nil)
	if e.Active() {
		t.Fatal("active before any bundle was fetched")
	}
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := mustLoad(t, shipped, ModeEnforce)
	if !e.Active() {
		t.Fatal("not active after a good bundle")
	}
	v := e.current.Load()
	for _, f := range v.files {
		if strings.HasSuffix(f, "_test.rego") {
			t.Errorf("the policy includes the test module %s", f)
		}
	}
	if !slices.Contains(v.files, bundleIntentionsPath) {
		t.Errorf("files %v: no intentions", v.files)
	}
	for _, tt := range []struct {
		caller gate.Identity
		op     *gate.Op
	}{
		{web, kvOp(gate.ActionWrite, "/app/greeting")},
		{web, kvOp(gate.ActionWrite, "/app/secret/token")},
		{web, kvOp(gate.ActionRead, "/other")},
		{admin, kvOp(gate.ActionDelete, "/app/secret/token")},
		{batch, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/")},
	} {
		got, gerr := e.Authorize(context.Background(), tt.caller, tt.op)
		want, werr := dir.Authorize(context.Background(), tt.caller, tt.op)
		if got.Effect != want.Effect || got.Reason != want.Reason || (gerr == nil) != (werr == nil) {
			t.Errorf("%s %v %s: bundle %v %q %v, directory %v %q %v", tt.caller.ID, tt.op.Action, tt.op.Keys.Key,
				got.Effect, got.Reason, gerr, want.Effect, want.Reason, werr)
		}
	}
	// No manifest revision: the content hash, as a directory's.
	if r := e.Revision(); len(r) != 16 || r == "none" {
		t.Errorf("revision %q, want a content hash", r)
	}
	st := e.Status()
	if st.Kind != "bundle" || st.Source != srv.url() || !st.Active || st.ActivatedAt.IsZero() || st.LastError != "" {
		t.Errorf("status %+v", st)
	}
}

// Every bundle must carry a valid signature, by the configured key, over
// every file it holds; anything else is refused and the last good bundle
// stays in use, with the refusal counted and shown.
func TestBundleVerification(t *testing.T) {
	key, other := newSigningKey(t), newSigningKey(t)
	goodDir := copyShipped(t)
	good := buildBundle(t, goodDir, key, "good")
	// Another revision that would let web write /app/secret/: what an
	// attacker would want in.
	evilDir := copyShipped(t)
	writeFile(t, evilDir, "evil.rego", "package storegate.authz\n\nallow if startswith(input.op.key, \"/app/secret/\")\n")
	evil := buildBundle(t, evilDir, key, "evil")

	tamperedIntentions := rewriteBundle(t, good, func(name string, c []byte) []byte {
		if name == "/data.json" {
			return bytes.Replace(c, []byte(`"source":"spiffe://example.org/admin"`), []byte(`"source":"spiffe://example.org/*"`), 1)
		}
		return c
	})
	if bytes.Equal(tamperedIntentions, good) {
		t.Fatal("the tampering changed nothing")
	}
	var evilModule []byte
	rewriteBundle(t, evil, func(name string, c []byte) []byte {
		if strings.HasSuffix(name, "/evil.rego") {
			evilModule = c
		}
		return c
	})
	tests := []struct {
		name string
		raw  []byte
		want string // in the error
	}{
		{"tampered file", tamperedIntentions, "digest mismatch"},
		// A module smuggled into the good bundle, its signature untouched.
		{"file added after signing", rewriteBundle(t, good, keep, bundletest.File{Name: "/../evil.rego", Content: evilModule}),
			"not included in bundle signature"},
		{"signed with another key", buildBundle(t, evilDir, other, "evil"), "verify"},
		{"unsigned", rewriteBundle(t, evil, func(name string, c []byte) []byte {
			if name == "/.signatures.json" {
				return nil
			}
			return c
		}), "missing .signatures.json"},
		{"signatures of another bundle", rewriteBundle(t, evil, func(name string, c []byte) []byte {
			if name == "/.signatures.json" {
				return signaturesOf(t, good)
			}
			return c
		}), "signature"},
	}
	srv := newBundleServer(t, good)
	var r reloads
	e := bundleEngine(t, srv.url(), key, "", &r)
	if err := e.Reload(context.Background()); err != nil || e.Revision() != "good" {
		t.Fatalf("good bundle: %v, revision %q", err, e.Revision())
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, fails := r.counts()
			srv.set(tt.raw)
			err := e.Reload(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Reload = %v, want an error with %q", err, tt.want)
			}
			if e.Revision() != "good" || allowed(t, e, web, "/app/secret/token") || !allowed(t, e, web, "/app/greeting") {
				t.Errorf("revision %q after a refused bundle, want the last good one deciding", e.Revision())
			}
			if _, f := r.counts(); f != fails+1 {
				t.Errorf("failures counted %d -> %d, want one more", fails, f)
			}
			if st := e.Status(); !strings.Contains(st.LastError, tt.want) || st.LastErrorAt.IsZero() || st.Revision != "good" {
				t.Errorf("status %+v", st)
			}
		})
	}
	// The good one back: the error is cleared (one success told, so that
	// "the last reload failed" ends), nothing is reloaded.
	srv.set(good)
	oks, _ := r.counts()
	for range 2 {
		if err := e.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if st := e.Status(); st.LastError != "" || st.Revision != "good" {
		t.Errorf("status %+v after the good bundle came back", st)
	}
	if ok, _ := r.counts(); ok != oks+1 {
		t.Errorf("%d successes told after the good bundle came back, want 1", ok-oks)
	}
	// And the evil revision, properly signed, is what the key allows.
	srv.set(evil)
	if err := e.Reload(context.Background()); err != nil || e.Revision() != "evil" || !allowed(t, e, web, "/app/secret/token") {
		t.Errorf("signed bundle: %v, revision %q", err, e.Revision())
	}
}

// signaturesOf returns a bundle's .signatures.json.
func signaturesOf(t *testing.T, raw []byte) []byte {
	var sig []byte
	rewriteBundle(t, raw, func(name string, c []byte) []byte {
		if name == "/.signatures.json" {
			sig = c
		}
		return c
	})
	return sig
}

// keep leaves a bundle's file as it is.
func keep(_ string, c []byte) []byte { return c }

// Polls carry the ETag of the last bundle: an unchanged bundle costs a
// 304 and no reload.
func TestBundleFetchUsesETag(t *testing.T) {
	key := newSigningKey(t)
	a := buildBundle(t, shipped, key, "a")
	srv := newBundleServer(t, a)
	var r reloads
	e := bundleEngine(t, srv.url(), key, "", &r)
	for range 3 {
		if err := e.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ok, notModified := srv.counts()
	if ok != 1 || notModified != 2 {
		t.Errorf("server answered %d × 200 and %d × 304, want 1 and 2", ok, notModified)
	}
	if oks, _ := r.counts(); oks != 1 || e.Revision() != "a" {
		t.Errorf("%d reloads, revision %q; want 1, a", oks, e.Revision())
	}
	srv.set(buildBundle(t, copyShipped(t), key, "b"))
	if err := e.Reload(context.Background()); err != nil || e.Revision() != "b" {
		t.Errorf("changed bundle: %v, revision %q", err, e.Revision())
	}
}

// Before its first good bundle an engine is not active and denies every op,
// saying why; an unreachable server is a counted failure.
func TestBundleEngineWithoutBundleDenies(t *testing.T) {
	key := newSigningKey(t)
	srv := newBundleServer(t, nil)
	url := srv.url()
	srv.Close()
	var r reloads
	e := bundleEngine(t, url, key, t.TempDir(), &r)
	if err := e.Reload(context.Background()); err == nil {
		t.Fatal("Reload with the server down succeeded")
	}
	if e.Active() || e.Revision() != "none" {
		t.Errorf("active %v, revision %q", e.Active(), e.Revision())
	}
	d, err := e.Authorize(context.Background(), admin, kvOp(gate.ActionRead, "/x"))
	if err != nil || d.Effect != gate.Deny || d.Reason != reasonNoPolicy {
		t.Errorf("Authorize = %+v, %v; want deny: %s", d, err, reasonNoPolicy)
	}
	if _, f := r.counts(); f != 1 {
		t.Errorf("%d failures counted, want 1", f)
	}
	if st := e.Status(); st.Active || st.LastError == "" {
		t.Errorf("status %+v", st)
	}
}

// Each activated bundle is persisted; a new engine (a restart) with the
// server down starts from it, verified again; a persisted file that does
// not verify is refused, and the engine waits for the server.
func TestBundlePersistedBoot(t *testing.T) {
	key := newSigningKey(t)
	persist := filepath.Join(t.TempDir(), "state")
	a := buildBundle(t, shipped, key, "a")
	srv := newBundleServer(t, a)
	e := bundleEngine(t, srv.url(), key, persist, nil)
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(persist, persistFile)
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("persisted %d bytes, %v; want the bundle as served", len(got), err)
	}
	if st := e.Status(); st.Persisted != file {
		t.Errorf("status persisted %q, want %q", st.Persisted, file)
	}
	// A refused bundle does not replace the persisted one.
	srv.set(buildBundle(t, shipped, newSigningKey(t), "other-key"))
	if err := e.Reload(context.Background()); err == nil {
		t.Fatal("a bundle of another key was accepted")
	}
	if got, _ := os.ReadFile(file); !bytes.Equal(got, a) {
		t.Error("a refused bundle replaced the persisted one")
	}
	url := srv.url()
	srv.Close()

	booted := bundleEngine(t, url, key, persist, nil)
	if !booted.Active() || booted.Revision() != "a" || !allowed(t, booted, web, "/app/greeting") {
		t.Errorf("boot from the persisted bundle: active %v, revision %q", booted.Active(), booted.Revision())
	}
	if err := booted.Reload(context.Background()); err == nil || booted.Revision() != "a" {
		t.Errorf("Reload with the server down = %v, revision %q; want an error, a kept", err, booted.Revision())
	}
	if entries, _ := os.ReadDir(persist); len(entries) != 1 {
		t.Errorf("persist directory holds %d entries, want only %s", len(entries), persistFile)
	}

	// Verified again: another key refuses it.
	if e := bundleEngine(t, url, newSigningKey(t), persist, nil); e.Active() || !strings.Contains(e.Status().LastError, "persisted bundle") {
		t.Errorf("persisted bundle under another key: active %v, status %+v", e.Active(), e.Status())
	}
	// And a tampered file is refused.
	tampered := rewriteBundle(t, a, func(name string, c []byte) []byte {
		if strings.HasSuffix(name, "/authz.rego") {
			return append(c, "\n# edited\n"...)
		}
		return c
	})
	if err := os.WriteFile(file, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	if e := bundleEngine(t, url, key, persist, nil); e.Active() {
		t.Errorf("a tampered persisted bundle was loaded: revision %q", e.Revision())
	}
}

// A bundle's cost is bounded: compressed as served, and what its files
// expand to together.
func TestBundleSizeLimit(t *testing.T) {
	key := newSigningKey(t)
	dir := copyShipped(t)
	// 4 MiB of comments: compresses to a few KiB.
	writeFile(t, dir, "big.rego", "package storegate.big\n\n"+strings.Repeat("# padding padding padding padding\n", 4<<20/35))
	raw := buildBundle(t, dir, key, "big")
	if len(raw) > 1<<20 {
		t.Fatalf("the bundle is %d bytes compressed; the test wants under 1 MiB", len(raw))
	}
	srv := newBundleServer(t, raw)
	cfg := Config{Bundle: &BundleConfig{URL: srv.url(), PublicKey: key.public, Algorithm: "ES256", SizeLimit: 1 << 20},
		Logger: discardLogger()}
	e, err := Load(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "size limit") || e.Active() {
		t.Errorf("Reload = %v, active %v; want refused for its size", err, e.Active())
	}
	cfg.Bundle.SizeLimit = 8 << 20
	if e, err = Load(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(context.Background()); err != nil || e.Revision() != "big" {
		t.Errorf("under the limit: %v, revision %q", err, e.Revision())
	}
}

// A bundle that verifies but is not a storegate policy is refused, naming
// why.
func TestBundleContentRefused(t *testing.T) {
	key := newSigningKey(t)
	srv := newBundleServer(t, buildBundle(t, shipped, key, "good"))
	e := bundleEngine(t, srv.url(), key, "", nil)
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	broken := copyShipped(t)
	writeFile(t, broken, IntentionsFile, "intentions:\n  - name: x\n    source: \"**\"\n    resources: [kv]\n    actions: [fly]\n    effect: allow\n")
	for name, dir := range map[string]string{"bad intentions": broken} {
		var buf bytes.Buffer
		err := Build(context.Background(), &buf, BuildOptions{Dir: dir, SigningKey: key.private, Algorithm: "ES256"})
		if err == nil || !strings.Contains(err.Error(), "would refuse") {
			t.Errorf("%s: Build = %v, want it to refuse", name, err)
		}
	}
	// Signed anyway (the build's check skipped): the gateway refuses it,
	// on every poll that serves it.
	other := copyShipped(t)
	writeFile(t, other, "extra.json", `{"x": 1}`)
	syntax := copyShipped(t)
	writeFile(t, syntax, "broken.rego", "package storegate.authz\n\nallow if {\n")
	for _, tt := range []struct{ name, dir, want string }{
		{"bad intentions", broken, `"fly" is not a known name`},
		{"other data", other, "only data.intentions"},
		{"does not parse", syntax, "broken.rego"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := build(context.Background(), BuildOptions{Dir: tt.dir, SigningKey: key.private, Algorithm: "ES256", Revision: "bad"})
			if err != nil {
				if tt.name == "does not parse" && strings.Contains(err.Error(), tt.want) {
					return // OPA's compile refuses it before the gateway sees it
				}
				t.Fatal(err)
			}
			srv.set(raw)
			for range 2 {
				if err := e.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), tt.want) || e.Revision() != "good" {
					t.Errorf("Reload = %v, revision %q; want refused with %q", err, e.Revision(), tt.want)
				}
			}
		})
	}
}

// Watch polls the bundle server: a new revision is picked up without a
// Reload, signed with RSA as `opa build --signing-key` signs by default.
func TestBundleWatchPolls(t *testing.T) {
	dir := copyShipped(t)
	keyFile, public := rsaKeyFiles(t)
	build := func(rev string) []byte {
		var buf bytes.Buffer
		if err := Build(context.Background(), &buf, BuildOptions{Dir: dir, SigningKey: keyFile, Revision: rev}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	srv := newBundleServer(t, build("a"))
	e, err := Load(context.Background(), Config{Bundle: &BundleConfig{URL: srv.url(), PublicKey: public,
		MinDelay: 10 * time.Millisecond, MaxDelay: 30 * time.Millisecond}, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch = %v", err)
		}
	}()
	eventually(t, "revision a", func() bool { return e.Revision() == "a" })
	srv.set(build("b"))
	eventually(t, "revision b", func() bool { return e.Revision() == "b" })
	eventually(t, "polls answered 304", func() bool { _, nm := srv.counts(); return nm > 0 })
}

// rsaKeyFiles writes an RSA private key file (PKCS#1, as `openssl genrsa`
// writes it) and returns it and the PEM public key.
func rsaKeyFiles(t *testing.T) (keyFile, public string) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

// A bundle URL's query and user information (tokens, passwords) show
// nowhere: not in the status, not in a fetch error.
func TestBundleURLCredentialsRedacted(t *testing.T) {
	key := newSigningKey(t)
	srv := newBundleServer(t, nil)
	url := strings.Replace(srv.url(), "http://", "http://user:hunter2@", 1) + "?token=s3cret"
	srv.Close()
	e := bundleEngine(t, url, key, "", nil)
	err := e.Reload(context.Background())
	st := e.Status()
	for _, s := range []string{fmt.Sprint(err), st.Source, st.LastError} {
		if strings.Contains(s, "hunter2") || strings.Contains(s, "s3cret") {
			t.Errorf("%q shows the URL's credentials", s)
		}
	}
	if err == nil || st.Source != strings.Split(srv.url(), "?")[0] {
		t.Errorf("Reload = %v, source %q", err, st.Source)
	}
}
