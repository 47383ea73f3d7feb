package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	opacompile "github.com/open-policy-agent/opa/v1/compile"
)

// BuildOptions describe a signed bundle of a policy directory.
type BuildOptions struct {
	// Dir is the policy directory (its subdirectories too, as `opa build`
	// reads them).
	Dir string
	// SigningKey is the PEM private key (PKCS#8, PKCS#1 or SEC1), or its
	// file, or for the HS* algorithms the shared secret.
	SigningKey string
	// Algorithm is the signature algorithm (default RS256).
	Algorithm string
	// KeyID is the key id the signature names (default "default").
	KeyID string
	// Revision, when set, is the manifest's revision, which the gateway
	// reports as the policy's revision.
	Revision string
}

// Build writes to w the bundle `opa build --signing-key KEY [--revision R]
// DIR` writes, with OPA's own compile package: every .rego file (tests
// included, as OPA ships them) and data file, a manifest, and
// .signatures.json signing their hashes. Before writing, it checks that the
// gateway would accept the bundle: a storegate policy (Rego and
// data.intentions only) that compiles.
func Build(ctx context.Context, w io.Writer, o BuildOptions) error {
	raw, err := build(ctx, o)
	if err != nil {
		return err
	}
	if err := checkBuilt(ctx, raw); err != nil {
		return err
	}
	_, err = w.Write(raw)
	return err
}

// build is Build without the check.
func build(ctx context.Context, o BuildOptions) ([]byte, error) {
	if o.Dir == "" {
		return nil, errors.New("policy: build: no policy directory")
	}
	if o.SigningKey == "" {
		return nil, errors.New("policy: build: a signing key is required: the gateway loads signed bundles only")
	}
	if st, err := os.Stat(o.Dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("policy: build: %s is not a directory", o.Dir)
	}
	if o.Algorithm == "" {
		o.Algorithm = DefaultBundleAlgorithm
	}
	if o.KeyID == "" {
		o.KeyID = DefaultBundleKeyID
	}
	var buf bytes.Buffer
	c := opacompile.New().
		WithCapabilities(ast.CapabilitiesForThisVersion(ast.CapabilitiesRegoVersion(ast.RegoV1))).
		WithTarget(opacompile.TargetRego).
		WithRegoAnnotationEntrypoints(true).
		WithPaths(o.Dir).
		// As `opa build` does: an earlier build's output is not an input.
		WithFilter(func(abspath string, info os.FileInfo, _ int) bool {
			return !info.IsDir() && strings.HasSuffix(abspath, ".tar.gz")
		}).
		WithBundleSigningConfig(bundle.NewSigningConfig(o.SigningKey, o.Algorithm, "")).
		WithBundleVerificationKeyID(o.KeyID).
		WithRegoVersion(ast.RegoV1).
		WithOutput(&buf)
	if o.Revision != "" {
		c = c.WithRevision(o.Revision)
	}
	if err := c.Build(ctx); err != nil {
		return nil, fmt.Errorf("policy: build: %w", err)
	}
	return buf.Bytes(), nil
}

// checkBuilt fails when the gateway would refuse the built bundle for its
// content (the signature is the build's own and not checked here).
func checkBuilt(ctx context.Context, raw []byte) error {
	if err := checkTarball(bytes.NewReader(raw), DefaultBundleSizeLimit); err != nil {
		return fmt.Errorf("policy: build: %w", err)
	}
	b, err := bundle.NewReader(bytes.NewReader(raw)).WithSkipBundleVerification(true).WithRegoVersion(ast.RegoV1).Read()
	if err != nil {
		return fmt.Errorf("policy: build: %w", err)
	}
	src, err := bundleSource(&b)
	if err != nil {
		return fmt.Errorf("policy: build: the gateway would refuse this bundle: %w", err)
	}
	if _, err := prepare(ctx, src, loadOptions{}); err != nil {
		return fmt.Errorf("policy: build: the gateway would refuse this bundle: %w", err)
	}
	return nil
}
