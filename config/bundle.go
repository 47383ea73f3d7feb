package config

// BundleConfig takes policy from an OPA bundle served over HTTP(S) instead
// of a directory (policy.bundle).
type BundleConfig struct {
	// URL is the bundle's http(s):// address.
	URL string `yaml:"url,omitempty"`
}

func (b *BundleConfig) defaults() {}

func (b *BundleConfig) resolve(abs func(*string)) {}

func (b *BundleConfig) validate(bad func(format string, args ...any)) {
	if b.URL == "" {
		bad("policy.bundle.url: required")
	}
}
