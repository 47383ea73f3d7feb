package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/keys"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
)

// BundleConfig takes the policy from OPA bundles served over HTTP(S): the
// gzipped tarballs `opa build --signing-key` (or `gateway policy build`)
// writes. Every bundle must be signed (.signatures.json) with the key
// configured here and every file in it must match its signed hash; there
// is no way to turn verification off.
//
// A bundle's Rego modules (not *_test.rego) are the policy; its data
// document may hold only the key "intentions", which is compiled as
// intentions.yaml is in a directory (`opa build` of a policy directory puts
// intentions.yaml there). Its revision is the manifest's revision when set,
// else a hash of its content.
type BundleConfig struct {
	// URL is the bundle's http:// or https:// address.
	URL string
	// PublicKey is the PEM public key (or certificate) the bundles'
	// signatures are checked against; for the HS* algorithms, the shared
	// secret.
	PublicKey string
	// KeyID names the key (default "default", what `opa build` signs with
	// unless told otherwise). The configured key verifies every bundle
	// whatever key id its signature names.
	KeyID string
	// Algorithm is the signature algorithm (default RS256): RS256/384/512,
	// PS256/384/512, ES256/384/512, HS256/384/512.
	Algorithm string
	// Scope, when set, must equal the scope the signature names.
	Scope string
	// TLS is the client configuration for an https URL (the server's CA,
	// a client certificate); nil: the system's roots.
	TLS *tls.Config
	// MinDelay and MaxDelay bound the random wait between polls
	// (default DefaultBundleMinDelay and DefaultBundleMaxDelay).
	MinDelay, MaxDelay time.Duration
	// Timeout bounds one fetch, from dialing to the last byte (default
	// DefaultBundleTimeout).
	Timeout time.Duration
	// SizeLimit bounds a bundle in bytes: compressed as downloaded, and the
	// content of its files together (default DefaultBundleSizeLimit).
	SizeLimit int64
	// PersistDir, when set, keeps the last good bundle (its raw bytes, as
	// served) in PersistDir/bundle.tar.gz, and Load starts from it,
	// verifying it again, so that a replica serves while the bundle server
	// is down.
	PersistDir string
}

// The bundle defaults.
const (
	DefaultBundleMinDelay  = 10 * time.Second
	DefaultBundleMaxDelay  = 30 * time.Second
	DefaultBundleTimeout   = 30 * time.Second
	DefaultBundleSizeLimit = 16 << 20
	DefaultBundleKeyID     = "default"
	DefaultBundleAlgorithm = "RS256"
)

// bundleIntentionsPath is what a bundle's intentions go by in errors.
const bundleIntentionsPath = "data.intentions"

// bundleClient fetches, verifies, persists and installs one engine's
// bundles.
type bundleClient struct {
	e      *Engine
	cfg    BundleConfig
	source string // the URL without query and user information
	verify *bundle.VerificationConfig
	dl     *download.Downloader
	// persistPath is the persisted bundle's file ("": not persisted).
	persistPath string

	fetching sync.Mutex // one fetch at a time: the downloader is not safe for more
	// goodETag is the ETag of the last bundle downloaded that is the one
	// in use: after a refusal the downloader asks with it again, so that a
	// 304 always means "what you run" and a bad bundle is refused (and
	// counted) on every poll that serves it.
	goodETag string
	// outcome carries each fetch's result from the downloader's callback,
	// which runs exactly once per fetch.
	outcome chan error
}

// withDefaults fills in the defaults.
func (c BundleConfig) withDefaults() BundleConfig {
	if c.KeyID == "" {
		c.KeyID = DefaultBundleKeyID
	}
	if c.Algorithm == "" {
		c.Algorithm = DefaultBundleAlgorithm
	}
	if c.MinDelay <= 0 {
		c.MinDelay = DefaultBundleMinDelay
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = max(DefaultBundleMaxDelay, c.MinDelay)
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultBundleTimeout
	}
	if c.SizeLimit <= 0 {
		c.SizeLimit = DefaultBundleSizeLimit
	}
	return c
}

// RedactURL is u without its query and user information, which may hold
// credentials: what logs, /status and metrics show of a bundle URL.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.User, p.RawQuery, p.ForceQuery, p.Fragment, p.RawFragment = nil, "", false, "", ""
	return p.String()
}

// DefaultPersistDir is a persist directory under base for the bundle at
// u, so that gateways of different bundle URLs never share one.
func DefaultPersistDir(base, u string) string {
	h := sha256.Sum256([]byte(u))
	return filepath.Join(base, "bundles", hex.EncodeToString(h[:8]))
}

// verification is the OPA verification config of c: one key, required
// signatures.
func (c BundleConfig) verification() (*bundle.VerificationConfig, error) {
	if err := CheckBundleAlgorithm(c.Algorithm); err != nil {
		return nil, fmt.Errorf("policy: bundle: %w", err)
	}
	if err := checkKey(c.PublicKey, c.Algorithm); err != nil {
		return nil, err
	}
	kc := &keys.Config{Key: c.PublicKey, Algorithm: c.Algorithm, Scope: c.Scope}
	return bundle.NewVerificationConfig(map[string]*keys.Config{c.KeyID: kc}, c.KeyID, c.Scope, nil), nil
}

// CheckBundleAlgorithm fails unless alg is a signature algorithm OPA
// verifies bundles with.
func CheckBundleAlgorithm(alg string) error {
	if !keys.IsSupportedAlgorithm(alg) {
		return fmt.Errorf("signature algorithm %q is not one of RS256/384/512, PS256/384/512, ES256/384/512, HS256/384/512", alg)
	}
	return nil
}

// checkKey fails now on a key OPA could not verify with later, so that a
// wrong file stops the gateway at start instead of refusing every bundle.
func checkKey(key, alg string) error {
	if key == "" {
		return errors.New("policy: bundle verification key is empty: every bundle must be signed and verified")
	}
	if strings.HasPrefix(alg, "HS") {
		return nil
	}
	block, _ := pem.Decode([]byte(key))
	if block == nil {
		return errors.New("policy: bundle verification key: no PEM block (want a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)")
	}
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		_, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		_, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		_, err = x509.ParseCertificate(block.Bytes)
	default:
		return fmt.Errorf("policy: bundle verification key: a %s block; want a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE (never a private key)", block.Type)
	}
	if err != nil {
		return fmt.Errorf("policy: bundle verification key: %w", err)
	}
	return nil
}

// startBundle sets e up to take its policy from cfg's bundles and loads the
// persisted one, if any.
func (e *Engine) startBundle(ctx context.Context, cfg BundleConfig) error {
	cfg = cfg.withDefaults()
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("policy: bundle URL %q is not an http(s):// URL", RedactURL(cfg.URL))
	}
	if cfg.MaxDelay < cfg.MinDelay {
		return fmt.Errorf("policy: bundle polling: max delay %v is under min delay %v", cfg.MaxDelay, cfg.MinDelay)
	}
	vc, err := cfg.verification()
	if err != nil {
		return err
	}
	b := &bundleClient{e: e, cfg: cfg, source: RedactURL(cfg.URL), verify: vc, outcome: make(chan error, 1)}
	if cfg.PersistDir != "" {
		b.persistPath = filepath.Join(cfg.PersistDir, persistFile)
	}
	if b.dl, err = b.downloader(u); err != nil {
		return err
	}
	e.bundle = b
	e.current.Store(&version{revision: "none", digest: "none", empty: true, inactive: true, timeout: e.opts.timeout})
	e.log.Info("policy from bundles", "bundle", b.source, "mode", e.mode.String(), "persisted", b.persistPath)
	b.boot(ctx)
	return nil
}

// downloader is OPA's downloader for u in manual mode: poll drives it, so
// that a SIGHUP's fetch and the timer's never overlap and the delays need
// not be whole seconds.
func (b *bundleClient) downloader(u *url.URL) (*download.Downloader, error) {
	// OPA's client joins its base URL and the path with a slash.
	base, file := *u, path.Base(u.Path)
	base.Path, base.RawPath, base.RawQuery = path.Dir(u.Path), "", ""
	if u.RawQuery != "" {
		file += "?" + u.RawQuery
	}
	httpPlugin := "storegate"
	cfg, err := json.Marshal(map[string]any{"url": base.String(), "credentials": map[string]any{"plugin": httpPlugin}})
	if err != nil {
		return nil, fmt.Errorf("policy: bundle client: %w", err)
	}
	transport := &bundleHTTP{tls: b.cfg.TLS, limit: b.cfg.SizeLimit}
	client, err := rest.New(cfg, nil, rest.Logger(logging.NewNoOpLogger()),
		rest.AuthPluginLookup(func(name string) rest.HTTPAuthPlugin {
			if name == httpPlugin {
				return transport
			}
			return nil
		}))
	if err != nil {
		return nil, fmt.Errorf("policy: bundle client: %w", err)
	}
	manual := plugins.TriggerManual
	dc := download.Config{Trigger: &manual}
	if err := dc.ValidateAndInjectDefaults(); err != nil {
		return nil, fmt.Errorf("policy: bundle downloader: %w", err)
	}
	return download.New(dc, client, file).
		WithCallback(b.update).
		WithBundleVerificationConfig(b.verify).
		WithSizeLimitBytes(b.cfg.SizeLimit).
		WithBundlePersistence(true). // keeps the raw bytes: they are what is persisted
		WithBundleParserOpts(ast.ParserOptions{RegoVersion: ast.RegoV1}), nil
}

// fetch downloads the bundle now and installs it if it is new and good.
func (b *bundleClient) fetch(ctx context.Context) error {
	b.fetching.Lock()
	defer b.fetching.Unlock()
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	// Trigger returns early when ctx ends, but the fetch it started still
	// ends with the callback (its request is ctx's): the next may start
	// only after that.
	_ = b.dl.Trigger(ctx)
	return <-b.outcome
}

// update is the downloader's callback, called once per fetch: a download
// error, "not modified" (no bundle), or a bundle read and verified.
func (b *bundleClient) update(ctx context.Context, u download.Update) error {
	var err error
	switch {
	case u.Error != nil:
		err = fmt.Errorf("policy: bundle %s: %w", b.source, u.Error)
		// Go's HTTP errors name the URL with its query, which may hold
		// a token: logs and /status say what failed without it.
		if ue := (*url.Error)(nil); errors.As(u.Error, &ue) {
			err = fmt.Errorf("policy: bundle %s: %s: %w", b.source, ue.Op, ue.Err)
		}
		b.e.refuse(err)
	case u.Bundle != nil:
		var raw []byte
		if u.Raw != nil {
			raw, _ = io.ReadAll(u.Raw) // a bytes.Buffer
		}
		if err = b.install(ctx, u.Bundle, raw, true); err == nil {
			b.goodETag = u.ETag
		}
	default: // not modified: the server holds what is in use
		b.e.succeeded(true)
	}
	if err != nil {
		b.dl.SetCache(b.goodETag) // the callback runs in the fetch: no race
	}
	b.outcome <- err
	return err
}

// install turns a verified bundle into a source and installs it; raw, when
// set and the bundle is new, is persisted.
func (b *bundleClient) install(ctx context.Context, bb *bundle.Bundle, raw []byte, notify bool) error {
	src, err := bundleSource(bb)
	if err != nil {
		if notify {
			b.e.refuse(err)
		} else {
			b.e.failed(err)
		}
		return err
	}
	b.e.reloading.Lock()
	changed, err := b.e.install(ctx, src, notify)
	b.e.reloading.Unlock()
	if err != nil || !changed || raw == nil || b.persistPath == "" {
		return err
	}
	if err := persist(b.persistPath, raw); err != nil {
		// The bundle is verified and in use; only a restart with the
		// server down would miss it.
		b.e.log.Error("policy bundle not persisted; a restart while the bundle server is down would not have it",
			"file", b.persistPath, "err", err)
	}
	return nil
}

// poll fetches the bundle until ctx is done.
func (b *bundleClient) poll(ctx context.Context) error {
	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		if err := b.fetch(ctx); err != nil {
			failures++
		} else {
			failures = 0
		}
		if ctx.Err() != nil {
			return nil
		}
		timer.Reset(b.delay(failures))
	}
}

// delay is the wait before the next poll: random in [MinDelay, MaxDelay]
// (replicas spread out), or after failures a backoff from a second (or
// MinDelay, if less) up to MaxDelay.
func (b *bundleClient) delay(failures int) time.Duration {
	lo, hi := b.cfg.MinDelay, b.cfg.MaxDelay
	if failures > 0 {
		d := min(time.Second, lo) << min(failures-1, 16)
		return min(d, hi)
	}
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// bundleSource is what a verified bundle holds for the engine: the same
// source a policy directory gives, so that the intentions compiler, the
// Rego compiler and the prepared queries are one code path.
func bundleSource(b *bundle.Bundle) (*source, error) {
	if len(b.WasmModules) > 0 || len(b.PlanModules) > 0 {
		return nil, errors.New("policy: bundle holds Wasm or plan modules: storegate evaluates Rego only; build it with the rego target")
	}
	var other []string
	for k := range b.Data {
		if k != "intentions" {
			other = append(other, k)
		}
	}
	if len(other) > 0 {
		slices.Sort(other)
		return nil, fmt.Errorf("policy: bundle data holds %q: only data.intentions is read (the intentions.yaml of a policy directory); move other data into Rego", other)
	}
	src := &source{dir: "", rego: map[string][]byte{}, rev: b.Manifest.Revision}
	for _, m := range b.Modules {
		if strings.HasSuffix(m.Path, "_test.rego") {
			continue
		}
		src.rego[m.Path] = m.Raw
	}
	if in, ok := b.Data["intentions"]; ok {
		// JSON is YAML: the intentions compiler reads it as it reads
		// intentions.yaml, and its line numbers point into this.
		js, err := json.MarshalIndent(map[string]any{"intentions": in}, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("policy: bundle data.intentions: %w", err)
		}
		src.intentions, src.intentionsSrc = bundleIntentionsPath, js
	}
	return src, nil
}

// readBundle reads and verifies raw bundle bytes as a download does.
func (b *bundleClient) readBundle(raw []byte, name string) (*bundle.Bundle, error) {
	if err := checkTarball(bytes.NewReader(raw), b.cfg.SizeLimit); err != nil {
		return nil, err
	}
	loader := bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(raw), name).WithSizeLimitBytes(b.cfg.SizeLimit)
	bb, err := bundle.NewCustomReader(loader).
		WithBundleVerificationConfig(b.verify).
		WithSizeLimitBytes(b.cfg.SizeLimit).
		WithRegoVersion(ast.RegoV1).
		Read()
	if err != nil {
		return nil, err
	}
	return &bb, nil
}
