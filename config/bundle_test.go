package config

import (
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/policy"
)

// bundleConfig is goodConfig with policy from a bundle.
func bundleConfig(bundle string) string {
	return strings.Replace(goodConfig, "policy: {dir: policies, mode: shadow, cache_size: 0}", "policy:\n  bundle:\n"+bundle, 1)
}

func TestParseBundle(t *testing.T) {
	cfg, err := Parse([]byte(bundleConfig(`    url: https://bundles.example/storegate.tar.gz
    verification: {public_key: keys/bundle.pub}
    tls: {ca: keys/bundles-ca.pem}
    persist_dir: state/bundle
`)))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Policy.Bundle
	if cfg.Policy.Dir != "" {
		t.Errorf("policy.dir defaulted to %q beside a bundle", cfg.Policy.Dir)
	}
	if b.Verification.KeyID != policy.DefaultBundleKeyID || b.Verification.Algorithm != "RS256" ||
		time.Duration(b.Polling.MinDelay) != policy.DefaultBundleMinDelay || time.Duration(b.Polling.MaxDelay) != policy.DefaultBundleMaxDelay ||
		b.SizeLimit != policy.DefaultBundleSizeLimit || time.Duration(b.Timeout) != policy.DefaultBundleTimeout {
		t.Errorf("defaults: %+v", b)
	}
	cfg.Resolve("/etc/storegate")
	if b.Verification.PublicKey != "/etc/storegate/keys/bundle.pub" || b.TLS.CA != "/etc/storegate/keys/bundles-ca.pem" ||
		b.PersistDir != "/etc/storegate/state/bundle" {
		t.Errorf("paths not resolved: %+v", b)
	}
	// none stays none.
	cfg, err = Parse([]byte(bundleConfig("    url: http://127.0.0.1:8181/b.tar.gz\n    verification: {public_key: k.pub}\n    persist_dir: none\n")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Resolve("/etc"); cfg.Policy.Bundle.PersistDir != "none" {
		t.Errorf("persist_dir none resolved to %q", cfg.Policy.Bundle.PersistDir)
	}
}

// A bundle section's problems are reported together, and verification
// cannot be left out.
func TestParseBundleErrors(t *testing.T) {
	_, err := Parse([]byte(bundleConfig(`    url: ftp://user:secret@bundles.example/b.tar.gz?token=hunter2
    verification: {algorithm: XX256}
    polling: {min_delay: 10s, max_delay: 1s}
    tls: {cert: c.pem}
`)))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"policy.bundle.url", "public_key: required", "policy.bundle.verification.algorithm",
		"policy.bundle.polling", "cert and key go together"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	for _, secret := range []string{"secret", "hunter2"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q shows the URL's %s", err, secret)
		}
	}
	if _, err := Parse([]byte(bundleConfig("    url: https://b.example/b.tar.gz\n    verification: {public_key: k.pub}\n    insecure: true\n"))); err == nil {
		t.Error("an unknown key (insecure) was accepted")
	}
}
