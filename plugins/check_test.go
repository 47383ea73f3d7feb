package plugins

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wasm    []byte
		config  []byte
		caps    Capabilities
		version int
		want    []string // substrings of Problems; none: OK
	}{
		{name: "continue", wasm: guestBytes(t, "continue"), version: 1},
		{name: "prefix", wasm: guestBytes(t, "prefix", `PREFIX="/t"`, "CAPS=3"), caps: CapMutate | CapResponse, version: 1},
		{name: "config", wasm: guestBytes(t, "config"), config: []byte(`{"a":1}`), version: 1},
		{name: "missing export", wasm: guestBytes(t, "continue", "NO_ON_REQUEST", "ABI_VERSION=2"), version: 2,
			want: []string{`missing export "storegate_on_request" (i32, i32) -> i64`, "storegate_abi_version returned 2, want 1"}},
		{name: "wrong version", wasm: guestBytes(t, "continue", "ABI_VERSION=7"), version: 7, want: []string{"storegate_abi_version returned 7, want 1"}},
		{name: "no response hook", wasm: guestBytes(t, "deny", "CAPS=2"), caps: CapResponse, version: 1,
			want: []string{"capability 2 (response hook) without a storegate_on_response export"}},
		{name: "init deny", wasm: guestBytes(t, "continue", "INIT_DENY"), version: 1, want: []string{"storegate_init failed: abi: storegate_init refused the configuration: bad config"}},
		{name: "not wasm", wasm: []byte("hello"), want: []string{"not a valid WebAssembly module"}},
		{name: "trap", wasm: guestBytes(t, "bad", "BAD_TRAP", `BAD_PREFIX="/"`), version: 1,
			want: []string{"storegate_on_request failed: trap: wasm error: unreachable"}},
		{name: "malformed", wasm: guestBytes(t, "bad", "BAD_MALFORMED", `BAD_PREFIX="/"`), version: 1,
			want: []string{"storegate_on_request failed: malformed: result [0x10, +2147483647) lies outside"}},
		{name: "validator mutates", wasm: guestBytes(t, "bad", "BAD_MUTATE", `BAD_PREFIX="/"`), version: 1,
			want: []string{"storegate_on_request failed: abi: a validator (no capability 1) returned mutate"}},
		{name: "response range end", wasm: guestBytes(t, "bad", "BAD_RANGE_END", "CAPS=2", `BAD_PREFIX="/"`), caps: CapResponse, version: 1,
			want: []string{"storegate_on_response failed: abi: a response hook changed a range end"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Check(context.Background(), tc.wasm, tc.config)
			if err != nil {
				t.Fatal(err)
			}
			if rep.ABIVersion != tc.version || rep.Capabilities != tc.caps {
				t.Errorf("version %d caps %s, want %d %s", rep.ABIVersion, rep.Capabilities, tc.version, tc.caps)
			}
			if len(tc.want) == 0 && !rep.OK() {
				t.Errorf("problems: %q", rep.Problems)
			}
			for _, w := range tc.want {
				if !slices.ContainsFunc(rep.Problems, func(p string) bool { return strings.Contains(p, w) }) {
					t.Errorf("problems %q lack %q", rep.Problems, w)
				}
			}
			if tc.version != 0 && !slices.Contains(rep.Exports, "storegate_alloc") {
				t.Errorf("exports: %q", rep.Exports)
			}
		})
	}
}
