package policy

import (
	"slices"
	"testing"
)

func TestParseGlob(t *testing.T) {
	tests := []struct {
		in                  string
		literal             string
		exact, prefix, open bool
		pattern             string
	}{
		{"/app/x", "/app/x", true, false, false, "/app/x"},
		{"/app/**", "/app/", false, true, true, "/app/**"},
		{"**", "", false, true, true, "**"},
		{"/app/*", "/app/", false, false, false, "/app/*"},
		{"/app/*/x/**", "/app/", false, false, true, "/app/*/x/**"},
		{"/a**/b", "/a", false, false, false, "/a**/b"},
		{"/[x]?{y}\\/**", "/[x]?{y}\\/", false, true, true, "/\\[x\\]\\?\\{y\\}\\\\/**"},
	}
	for _, tt := range tests {
		g := parseGlob(tt.in)
		if g.literal != tt.literal || g.exact != tt.exact || g.prefix != tt.prefix || g.open != tt.open || g.pattern() != tt.pattern {
			t.Errorf("parseGlob(%q) = %+v pattern %q", tt.in, g, g.pattern())
		}
	}
}

func TestPrefixes(t *testing.T) {
	if got, ok := prefixes("/ab"); !ok || !slices.Equal(got, []string{"", "/", "/a"}) {
		t.Errorf("prefixes(/ab) = %q, %v", got, ok)
	}
	if _, ok := prefixes("/ü"); ok {
		t.Error("prefixes of a non-ASCII string")
	}
}
