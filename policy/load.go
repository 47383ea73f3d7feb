package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/storegate/storegate/internal/regularfile"
)

// The queries the engine asks.
const (
	queryAllow      = "data.storegate.authz.allow"
	queryReason     = "data.storegate.authz.reason"
	queryFilter     = "data.storegate.authz.filter"
	queryIntentions = "data." + IntentionsPackage
)

// reasonNoPolicy is the reason every op is denied with when the policy
// directory holds no policy.
const reasonNoPolicy = "no policy loaded: every request is denied"

// source is a policy's Rego modules and intentions, read but not yet
// parsed: what a policy directory holds (only files directly in it count),
// or what a bundle holds (bundleSource). Everything after reading — the
// intentions compiler, the Rego compiler, the prepared queries — is the
// same for both.
type source struct {
	dir     string
	missing bool              // the directory does not exist
	rego    map[string][]byte // by path; _test.rego files only when asked for
	// intentions is the intentions file's path ("data.intentions" for a
	// bundle), "" when there is none.
	intentions    string
	intentionsSrc []byte
	// rev, when set, is the revision the source names itself (a bundle's
	// manifest revision); the content hash still tells changes apart.
	rev string
}

// readSource reads dir; tests says whether to include _test.rego files.
func readSource(dir string, tests bool) (*source, error) {
	src := &source{dir: dir, rego: map[string][]byte{}}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		src.missing = true
		return src, nil
	}
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		isTest := strings.HasSuffix(name, "_test.rego")
		switch {
		case strings.HasPrefix(name, "."): // editors' and Kubernetes' own files
		case name == IntentionsFile:
			src.intentions = filepath.Join(dir, name)
		case strings.HasSuffix(name, ".rego") && (tests || !isTest):
			src.rego[filepath.Join(dir, name)] = nil
		}
	}
	for path := range src.rego {
		if src.rego[path], err = regularfile.Read(path); err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
	}
	if src.intentions != "" {
		if src.intentionsSrc, err = regularfile.Read(src.intentions); err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
	}
	return src, nil
}

// empty reports whether the directory holds no policy at all.
func (s *source) empty() bool { return len(s.rego) == 0 && s.intentions == "" }

// paths returns the files read, sorted.
func (s *source) paths() []string {
	out := slices.Sorted(maps.Keys(s.rego))
	if s.intentions != "" {
		out = append(out, s.intentions)
	}
	return out
}

// revision is the source's own revision when it names one, else its
// content hash.
func (s *source) revision() string {
	if s.rev != "" {
		return s.rev
	}
	return s.digest()
}

// digest is a content hash of the files read, names included.
func (s *source) digest() string {
	if s.empty() {
		return "none"
	}
	h := sha256.New()
	for _, p := range s.paths() {
		content := s.rego[p]
		if p == s.intentions {
			content = s.intentionsSrc
		}
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(p), len(content))
		h.Write(content)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// modules parses the Rego files and compiles the intentions into the
// generated module. Every error names its file and line; all of them are
// reported at once.
func (s *source) modules() (map[string]*ast.Module, error) {
	mods := make(map[string]*ast.Module, len(s.rego)+1)
	var errs []error
	opts := ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}
	for path, src := range s.rego {
		m, err := ast.ParseModuleWithOpts(path, string(src), opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("policy: %w", err))
			continue
		}
		mods[path] = m
	}
	if s.intentions != "" {
		ins, err := parseIntentions(s.intentions, s.intentionsSrc)
		if err != nil {
			errs = append(errs, err)
		} else {
			name := generatedName(s.intentions)
			if _, clash := s.rego[name]; clash {
				return nil, fmt.Errorf("policy: %s: the module generated from %s goes by that name", name, IntentionsFile)
			}
			m, err := ast.ParseModuleWithOpts(name, string(generate(s.intentions, ins)), opts)
			if err != nil { // a bug of the generator, not of the file
				errs = append(errs, fmt.Errorf("policy: %s: generated module: %w", s.intentions, err))
			} else {
				mods[name] = m
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return mods, nil
}

// generatedName is the name the generated module goes by in OPA's errors and
// traces.
func generatedName(intentions string) string { return intentions + ".rego" }

// compile compiles the modules of a policy directory.
func compile(mods map[string]*ast.Module) (*ast.Compiler, error) {
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	if c.Compile(mods); c.Failed() {
		return nil, fmt.Errorf("policy: %w", c.Errors)
	}
	return c, nil
}

// version is one loaded policy, its queries prepared once.
type version struct {
	revision string
	// digest is the content hash of its source: what tells a changed
	// policy from an unchanged one whatever revision it names.
	digest string
	files  []string
	empty  bool // nothing loaded: every op is denied
	// undefined: no rule defines data.storegate.authz.allow.
	undefined bool
	// inactive: the placeholder of a bundle engine before its first good
	// bundle (empty too).
	inactive bool
	// activated is when the version was put in use.
	activated time.Time

	allow, reason, filter, intentions rego.PreparedEvalQuery

	// cache holds this version's decisions; nil when caching is off or the
	// policy is not deterministic.
	cache *decisionCache
	// timeout bounds each decision's evaluation; 0: none.
	timeout time.Duration
	// fast decides the ops it handles when the policy is the shipped
	// intentions engine (fast.go); nil: OPA decides every op.
	fast *fastPath
}

// loadOptions are the engine's settings every version it loads gets.
type loadOptions struct {
	cacheBytes int64
	timeout    time.Duration
	noFast     bool // Config.DisableFastPath
}

// load reads, compiles and prepares the policy directory dir.
func load(ctx context.Context, dir string, opts loadOptions) (*version, *source, error) {
	src, err := readSource(dir, false)
	if err != nil {
		return nil, nil, err
	}
	v, err := prepare(ctx, src, opts)
	if err != nil {
		return nil, nil, err
	}
	return v, src, nil
}

// prepare compiles and prepares a policy read from a directory or a bundle.
func prepare(ctx context.Context, src *source, opts loadOptions) (*version, error) {
	v := &version{revision: src.revision(), digest: src.digest(), files: src.paths(), timeout: opts.timeout}
	if src.empty() {
		v.empty = true
		return v, nil
	}
	mods, err := src.modules()
	if err != nil {
		return nil, err
	}
	c, err := compile(mods)
	if err != nil {
		return nil, err
	}
	v.undefined = len(c.GetRulesExact(ast.MustParseRef(queryAllow))) == 0
	if deterministic(c) {
		v.cache = newDecisionCache(opts.cacheBytes)
	}
	store := inmem.New()
	for _, q := range []struct {
		query string
		dst   *rego.PreparedEvalQuery
	}{
		{queryAllow, &v.allow},
		{queryReason, &v.reason},
		{queryFilter, &v.filter},
		{queryIntentions, &v.intentions},
	} {
		*q.dst, err = rego.New(rego.Query(q.query), rego.Compiler(c), rego.Store(store)).PrepareForEval(ctx)
		if err != nil {
			return nil, fmt.Errorf("policy: prepare %s: %w", q.query, err)
		}
	}
	if !opts.noFast && shippedEngine(src) {
		// The intentions parsed once already (modules); a failure to
		// compile them for the fast path leaves every op to OPA.
		if ins, err := parseIntentions(src.intentions, src.intentionsSrc); err == nil {
			v.fast, _ = compileFast(ins)
		}
	}
	return v, nil
}
