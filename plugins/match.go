package plugins

import (
	"fmt"
	"math/bits"
	"slices"

	"github.com/storegate/storegate/gate"
)

// Match selects the ops a plugin sees. Every non-empty list must contain
// the op's field; an empty list selects every value.
type Match struct {
	Protocols []gate.Protocol
	Resources []gate.Resource
	Actions   []gate.Action
	// Keys are globs over the op's key (a range's start key): "*" matches
	// any bytes within one '/'-separated segment, "**" any bytes at all;
	// every other byte matches itself. Empty: every key.
	Keys []string
}

// matcher is a Match compiled for the request path: lists as they are
// (they are short; a linear scan beats a map) and globs compiled.
type matcher struct {
	protocols []gate.Protocol
	resources []gate.Resource
	actions   []gate.Action
	keys      []glob
}

// Resources the fronts give to plugins in ABI v1 (ABI.md): a match naming
// only others would select nothing, and a validator configured for, say,
// locks would silently never run. Such a match is refused instead.
var pluggable = []gate.Resource{gate.ResourceKV, gate.ResourceWatch, gate.ResourceService, gate.ResourceCheck}

// compile checks m and compiles its globs.
func (m Match) compile() (matcher, error) {
	for _, r := range m.Resources {
		if !slices.Contains(pluggable, r) {
			return matcher{}, fmt.Errorf("resource %s does not go through plugins (kv, watch, service and check do)", r)
		}
	}
	c := matcher{
		protocols: slices.Clone(m.Protocols),
		resources: slices.Clone(m.Resources),
		actions:   slices.Clone(m.Actions),
	}
	for _, k := range m.Keys {
		g, err := compileGlob(k)
		if err != nil {
			return matcher{}, err
		}
		c.keys = append(c.keys, g)
	}
	return c, nil
}

// selects reports whether the op is one the plugin sees. It allocates
// nothing.
func (m *matcher) selects(op *gate.Op) bool {
	if len(m.protocols) > 0 && !slices.Contains(m.protocols, op.Protocol) {
		return false
	}
	if len(m.resources) > 0 && !slices.Contains(m.resources, op.Resource) {
		return false
	}
	if len(m.actions) > 0 && !slices.Contains(m.actions, op.Action) {
		return false
	}
	if len(m.keys) == 0 {
		return true
	}
	for i := range m.keys {
		if m.keys[i].match(op.Keys.Key) {
			return true
		}
	}
	return false
}

// maxGlobTokens bounds a glob's length so that matching needs no heap: the
// matcher's state set is a fixed array of bits, one per token.
const maxGlobTokens = 255

// tokenKind is what one glob token matches.
type tokenKind uint8

const (
	tokenByte       tokenKind = iota // one given byte
	tokenStar                        // "*": any run of bytes but '/'
	tokenDoubleStar                  // "**": any run of bytes
)

// token is one element of a compiled glob.
type token struct {
	kind tokenKind
	b    byte
}

// glob is a compiled key glob. Matching simulates the glob as an NFA over
// a bit set of token positions: linear in the key's length times the
// active positions, with no backtracking (a caller controls the key, so a
// pattern with several stars must not cost exponential time) and no
// allocation.
type glob struct {
	pattern string
	tokens  []token
	literal bool // no stars: plain comparison
	any     bool // "**" alone: matches everything
}

// compileGlob parses pattern.
func compileGlob(pattern string) (glob, error) {
	g := glob{pattern: pattern}
	for i := 0; i < len(pattern); i++ {
		switch {
		case pattern[i] != '*':
			g.tokens = append(g.tokens, token{kind: tokenByte, b: pattern[i]})
		case i+1 < len(pattern) && pattern[i+1] == '*':
			for i+1 < len(pattern) && pattern[i+1] == '*' {
				i++ // "***" is "**"
			}
			g.tokens = append(g.tokens, token{kind: tokenDoubleStar})
		default:
			g.tokens = append(g.tokens, token{kind: tokenStar})
		}
	}
	if len(g.tokens) > maxGlobTokens {
		return glob{}, fmt.Errorf("plugins: key glob %q is longer than %d bytes", pattern, maxGlobTokens)
	}
	g.literal = !slices.ContainsFunc(g.tokens, func(t token) bool { return t.kind != tokenByte })
	g.any = len(g.tokens) == 1 && g.tokens[0].kind == tokenDoubleStar
	return g, nil
}

// stateSet holds one bit per token position (0..maxGlobTokens).
type stateSet [(maxGlobTokens + 64) / 64]uint64

// set adds position i.
func (s *stateSet) set(i int) { s[i/64] |= 1 << (i % 64) }

// has reports whether position i is in the set.
func (s *stateSet) has(i int) bool { return s[i/64]&(1<<(i%64)) != 0 }

// empty reports whether no position is in the set.
func (s *stateSet) empty() bool {
	for _, w := range s {
		if w != 0 {
			return false
		}
	}
	return true
}

// closure adds, for every star at an active position, the position after
// it (a star may match nothing). Ascending order chains consecutive stars.
func (g *glob) closure(s *stateSet) {
	for i, t := range g.tokens {
		if t.kind != tokenByte && s.has(i) {
			s.set(i + 1)
		}
	}
}

// match reports whether key matches the glob.
func (g *glob) match(key []byte) bool {
	switch {
	case g.any:
		return true
	case g.literal:
		return string(key) == g.pattern // no allocation: the compiler compares in place
	}
	var cur, next stateSet
	cur.set(0)
	g.closure(&cur)
	n := len(g.tokens)
	for _, c := range key {
		next = stateSet{}
		for w, word := range cur {
			for word != 0 {
				i := w*64 + bits.TrailingZeros64(word)
				word &= word - 1
				if i == n {
					continue
				}
				switch t := g.tokens[i]; t.kind {
				case tokenByte:
					if t.b == c {
						next.set(i + 1)
					}
				case tokenStar:
					if c != '/' {
						next.set(i)
					}
				case tokenDoubleStar:
					next.set(i)
				}
			}
		}
		g.closure(&next)
		if next.empty() {
			return false
		}
		cur = next
	}
	return cur.has(n)
}
