package policy

import (
	"errors"
	"math/bits"
	"strings"
	"unicode/utf8"
)

// fastGlob is a glob of an intention compiled for the fast path: the same
// tests the generator writes in Rego (globTests, overlapTests), decided in
// Go. What follows the literal part is matched by a small NFA over bytes,
// which is what glob.match with the delimiter "/" does on the strings it is
// given: `*` consumes any bytes but '/', `**` any bytes, every other
// character is itself.
type fastGlob struct {
	raw, literal        string
	exact, prefix, open bool
	// nonASCII: the literal holds a byte >= 0x80; the generator then tests
	// overlaps with startswith instead of listing the literal's prefixes,
	// which differs for a cover equal to the literal.
	nonASCII bool
	// elems is the glob after its literal part (empty for exact and prefix
	// globs).
	elems []globElem
	// stars has bit j set when elems[j] is a wildcard: the state "j
	// elements matched" then also holds j+1 (a wildcard matches nothing).
	stars [nfaWords]uint64
	words int // of the NFA's state vector in use
}

type globElem struct {
	kind elemKind
	c    byte
}

type elemKind uint8

const (
	elemByte  elemKind = iota // the byte c
	elemStar                  // `*`: any bytes but '/'
	elemSuper                 // `**`: any bytes
)

// nfaWords bounds a glob's NFA: at most nfaWords*64-1 elements after its
// literal part. Longer globs are not compiled (the fast path declines the
// intentions).
const nfaWords = 4

var errGlobTooLong = errors.New("a glob is too long after its first wildcard for the compiled fast path")

func compileGlob(s string) (fastGlob, error) {
	p := parseGlob(s)
	g := fastGlob{raw: p.raw, literal: p.literal, exact: p.exact, prefix: p.prefix, open: p.open}
	for i := 0; i < len(g.literal); i++ {
		if g.literal[i] >= utf8.RuneSelf {
			g.nonASCII = true
			break
		}
	}
	if g.exact || g.prefix {
		return g, nil
	}
	rest := s[len(g.literal):]
	for i := 0; i < len(rest); i++ {
		switch {
		case rest[i] == '*' && i+1 < len(rest) && rest[i+1] == '*':
			g.elems = append(g.elems, globElem{kind: elemSuper})
			i++
		case rest[i] == '*':
			g.elems = append(g.elems, globElem{kind: elemStar})
		default:
			g.elems = append(g.elems, globElem{kind: elemByte, c: rest[i]})
		}
	}
	if len(g.elems)+1 > nfaWords*64 {
		return g, errGlobTooLong
	}
	g.words = (len(g.elems) + 1 + 63) / 64
	for j, e := range g.elems {
		if e.kind != elemByte {
			g.stars[j/64] |= 1 << (j % 64)
		}
	}
	return g, nil
}

// tests is the generator's globTests: whether s matches, and with nonEmpty
// that s is not empty (keys, services, sources).
func (g *fastGlob) tests(s string, nonEmpty bool) bool {
	switch {
	case g.exact:
		return s == g.raw
	case g.literal != "":
		if !strings.HasPrefix(s, g.literal) {
			return false
		}
	case nonEmpty && s == "":
		return false
	}
	return g.prefix || g.match(s[len(g.literal):])
}

// covers is whether the glob is in a covers set for a range with cover
// (every key of the range starts with cover).
func (g *fastGlob) covers(cover string) bool { return g.open && g.tests(cover, false) }

// overlaps is whether the glob is in an overlaps set for a range with
// cover: the generator's overlapTests, which are alternatives.
func (g *fastGlob) overlaps(cover string) bool {
	lit := g.literal
	switch {
	case g.prefix && lit == "":
		return false
	case g.prefix && g.nonASCII:
		return strings.HasPrefix(lit, cover)
	case g.prefix:
		return len(cover) < len(lit) && strings.HasPrefix(lit, cover)
	case !g.exact && lit == "":
		return true
	case !g.exact:
		return strings.HasPrefix(cover, lit) || strings.HasPrefix(lit, cover)
	}
	return strings.HasPrefix(lit, cover)
}

// match runs the NFA of the glob's elements over s (what follows the
// literal part). Its cost is linear in s times the live states, which are
// at most the wildcards plus one; it allocates nothing.
func (g *fastGlob) match(s string) bool {
	m := len(g.elems)
	var cur [nfaWords]uint64
	cur[0] = 1
	g.close(&cur)
	for i := 0; i < len(s); i++ {
		c := s[i]
		var next [nfaWords]uint64
		live := false
		for w := range g.words {
			for b := cur[w]; b != 0; b &= b - 1 {
				j := w*64 + bits.TrailingZeros64(b)
				if j > 0 { // a wildcard just matched keeps matching
					if e := g.elems[j-1]; e.kind == elemSuper || e.kind == elemStar && c != '/' {
						next[j/64] |= 1 << (j % 64)
						live = true
					}
				}
				if j < m {
					if e := g.elems[j]; e.kind == elemSuper || e.kind == elemStar && c != '/' || e.kind == elemByte && e.c == c {
						next[(j+1)/64] |= 1 << ((j + 1) % 64)
						live = true
					}
				}
			}
		}
		if !live {
			return false
		}
		g.close(&next)
		cur = next
	}
	return cur[m/64]&(1<<(m%64)) != 0
}

// close adds to st the states reached by wildcards matching nothing.
func (g *fastGlob) close(st *[nfaWords]uint64) {
	for {
		changed := false
		var carry uint64
		for w := range g.words {
			add := st[w] & g.stars[w]
			shifted := add<<1 | carry
			carry = add >> 63
			if shifted&^st[w] != 0 {
				st[w] |= shifted
				changed = true
			}
		}
		if !changed {
			return
		}
	}
}
