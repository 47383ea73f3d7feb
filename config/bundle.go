package config

import (
	"net/url"
	"time"

	"github.com/storegate/storegate/policy"
)

// BundleConfig takes policy from an OPA bundle served over HTTP(S) instead
// of a directory (policy.bundle). Every bundle must be signed by the key in
// verification and is refused otherwise; there is no way to turn that off.
//
//	policy:
//	  bundle:
//	    url: https://bundles.internal/storegate/bundle.tar.gz
//	    verification: {public_key: keys/bundle.pub}   # key_id, algorithm (RS256), scope
//	    polling: {min_delay: 10s, max_delay: 30s}
//	    tls: {ca: bundles-ca.pem}                       # or cert/key, or spiffe: the gateway's SVID
//	    persist_dir: /var/lib/storegate/bundle          # default: the user's cache dir; none: off
type BundleConfig struct {
	// URL is the bundle's http(s):// address.
	URL          string             `yaml:"url,omitempty"`
	Verification BundleVerification `yaml:"verification,omitempty"`
	Polling      BundlePolling      `yaml:"polling,omitempty"`
	// Timeout bounds one fetch, connecting to the last byte (default 30s).
	Timeout Duration `yaml:"timeout,omitempty"`
	// SizeLimit bounds a bundle, compressed and expanded (default 16MiB).
	SizeLimit ByteSize `yaml:"size_limit,omitempty"`
	// TLS is the bundle server's CA, a client certificate, or (spiffe) the
	// gateway's own SVID, for an https URL.
	TLS TLSFiles `yaml:"tls,omitempty"`
	// PersistDir keeps the last good bundle, so that a restart while the
	// server is down starts from it (verified again). Default: under the
	// user's cache directory (storegate/bundles/<hash of the URL>); "none":
	// not kept. Give each replica its own (a Kubernetes emptyDir).
	PersistDir string `yaml:"persist_dir,omitempty"`
}

// BundleVerification is the key bundles are signed with, as
// `opa build --signing-key` signs them.
type BundleVerification struct {
	// PublicKey is a PEM file: PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE
	// (for HS256/384/512: the shared secret). Required.
	PublicKey string `yaml:"public_key,omitempty"`
	// KeyID names the key (default "default", opa build's).
	KeyID string `yaml:"key_id,omitempty"`
	// Algorithm is the signature's (default RS256).
	Algorithm string `yaml:"algorithm,omitempty"`
	// Scope, when set, must be the signature's scope.
	Scope string `yaml:"scope,omitempty"`
}

// BundlePolling bounds the random wait between polls; each poll sends the
// last bundle's ETag, so an unchanged bundle costs a 304.
type BundlePolling struct {
	MinDelay Duration `yaml:"min_delay,omitempty"` // default 10s
	MaxDelay Duration `yaml:"max_delay,omitempty"` // default 30s
}

func (b *BundleConfig) defaults() {
	if b.Verification.KeyID == "" {
		b.Verification.KeyID = policy.DefaultBundleKeyID
	}
	if b.Verification.Algorithm == "" {
		b.Verification.Algorithm = policy.DefaultBundleAlgorithm
	}
	if b.Polling.MinDelay == 0 {
		b.Polling.MinDelay = Duration(policy.DefaultBundleMinDelay)
	}
	if b.Polling.MaxDelay == 0 {
		b.Polling.MaxDelay = max(Duration(policy.DefaultBundleMaxDelay), b.Polling.MinDelay)
	}
	if b.Timeout == 0 {
		b.Timeout = Duration(policy.DefaultBundleTimeout)
	}
	if b.SizeLimit == 0 {
		b.SizeLimit = policy.DefaultBundleSizeLimit
	}
}

func (b *BundleConfig) resolve(abs func(*string)) {
	abs(&b.Verification.PublicKey)
	abs(&b.TLS.Cert)
	abs(&b.TLS.Key)
	abs(&b.TLS.CA)
	if b.PersistDir != "none" {
		abs(&b.PersistDir)
	}
}

func (b *BundleConfig) validate(bad func(format string, args ...any)) {
	if u, err := url.Parse(b.URL); b.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("policy.bundle.url: %q is not an http(s):// URL", policy.RedactURL(b.URL))
	}
	if b.Verification.PublicKey == "" {
		bad("policy.bundle.verification.public_key: required: every bundle must be signed (gateway policy build --signing-key) and is verified with this key")
	}
	if err := policy.CheckBundleAlgorithm(b.Verification.Algorithm); err != nil {
		bad("policy.bundle.verification.algorithm: %v", err)
	}
	if b.Polling.MinDelay < 0 || b.Polling.MaxDelay < b.Polling.MinDelay {
		bad("policy.bundle.polling: min_delay %v and max_delay %v: want 0 <= min_delay <= max_delay",
			time.Duration(b.Polling.MinDelay), time.Duration(b.Polling.MaxDelay))
	}
	if b.Timeout < 0 || b.SizeLimit < 0 {
		bad("policy.bundle: timeout and size_limit must not be negative")
	}
	if (b.TLS.Cert == "") != (b.TLS.Key == "") {
		bad("policy.bundle.tls: cert and key go together")
	}
	if b.TLS.SPIFFE != "" && (b.TLS.Cert != "" || b.TLS.CA != "") {
		bad("policy.bundle.tls: spiffe replaces cert, key and ca")
	}
}
