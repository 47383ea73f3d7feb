package policy

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// glob is a '/'-delimited glob as intentions spell it: `*` matches within one
// segment, `**` matches anything (including '/'), every other character is
// literal. It is parsed into the shapes the generator can turn into rules
// that OPA's rule indexer understands.
type glob struct {
	raw string
	// literal is the text before the first wildcard: every string the glob
	// matches starts with it. All of raw when the glob is exact.
	literal string
	// exact: no wildcard, the glob names the one string raw.
	exact bool
	// prefix: the only wildcard is a trailing "**", so the glob matches
	// exactly the strings that start with literal.
	prefix bool
	// open: the glob ends in "**", so it matches every extension of any
	// string it matches.
	open bool
}

// checkGlob rejects what would make a glob ambiguous or unprintable.
func checkGlob(s string) error {
	switch {
	case !utf8.ValidString(s):
		return errors.New("glob is not valid UTF-8")
	case strings.Contains(s, "***"):
		return errors.New(`use "*" for one segment or "**" for any, not "***"`)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errors.New("glob holds a control character")
	}
	return nil
}

func parseGlob(s string) glob {
	g := glob{raw: s, open: strings.HasSuffix(s, "**")}
	i := strings.IndexByte(s, '*')
	if i < 0 {
		g.literal, g.exact = s, true
		return g
	}
	g.literal = s[:i]
	g.prefix = i == len(s)-2 && g.open
	return g
}

// pattern returns the glob in OPA's glob.match syntax (gobwas/glob): the
// wildcards are the same, every other meta character is escaped.
func (g glob) pattern() string {
	if strings.IndexAny(g.raw, `?\[]{}`) < 0 {
		return g.raw
	}
	var b strings.Builder
	for i := 0; i < len(g.raw); i++ {
		switch c := g.raw[i]; c {
		case '?', '\\', '[', ']', '{', '}':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// prefixes returns every proper prefix of s, "" included and s excluded, and
// false when s is not ASCII: a range's cover is cut at a byte, which may fall
// inside a multi-byte character, and such a prefix is no valid string literal.
func prefixes(s string) ([]string, bool) {
	for i := range len(s) {
		if s[i] >= utf8.RuneSelf {
			return nil, false
		}
	}
	out := make([]string, len(s))
	for i := range out {
		out[i] = s[:i]
	}
	return out, true
}
