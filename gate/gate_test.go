package gate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestKeyRangePrefix(t *testing.T) {
	tests := []struct {
		name       string
		r          KeyRange
		want       string
		exact      bool
		contains   []string
		notContain []string
	}{
		{"single key", KeyRange{Key: []byte("/a")}, "/a", false, []string{"/a"}, []string{"/a/b", "/"}},
		{"prefix", KeyRange{Key: []byte("/app/"), End: []byte("/app0")}, "/app/", true, []string{"/app/", "/app/x/y"}, []string{"/app", "/apq"}},
		{"everything", KeyRange{Key: []byte{0}, End: []byte{0}}, "", false, []string{"\x00", "/x"}, nil},
		{"empty key, all", KeyRange{Key: nil, End: []byte{0}}, "", true, []string{"", "/x"}, nil},
		{"from key", KeyRange{Key: []byte("/m"), End: []byte{0}}, "", false, []string{"/m", "/z"}, []string{"/a"}},
		{"arbitrary range", KeyRange{Key: []byte("/app/a"), End: []byte("/app/m")}, "/app/", false, []string{"/app/a", "/app/l"}, []string{"/app/m", "/app/"}},
		{"0xff prefix", KeyRange{Key: []byte{'a', 0xff}, End: []byte{'b'}}, "a\xff", true, []string{"a\xff\x01"}, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, exact := tt.r.Prefix()
			if string(p) != tt.want || exact != tt.exact {
				t.Errorf("Prefix() = %q, %v; want %q, %v", p, exact, tt.want, tt.exact)
			}
			for _, k := range tt.contains {
				if !tt.r.Contains([]byte(k)) {
					t.Errorf("Contains(%q) = false", k)
				}
				if !bytes.HasPrefix([]byte(k), p) {
					t.Errorf("key %q in range does not start with its prefix %q", k, p)
				}
			}
			for _, k := range tt.notContain {
				if tt.r.Contains([]byte(k)) {
					t.Errorf("Contains(%q) = true", k)
				}
			}
		})
	}
	if got := PrefixEnd([]byte{0xff, 0xff}); !bytes.Equal(got, []byte{0}) {
		t.Errorf("PrefixEnd(ff ff) = %x", got)
	}
}

type fixedAuthz struct {
	d   Decision
	err error
}

func (f fixedAuthz) Authorize(context.Context, Identity, *Op) (Decision, error) { return f.d, f.err }

func TestCheckFailsClosed(t *testing.T) {
	web := Identity{ID: spiffeid.RequireFromString("spiffe://example.org/web")}
	read := Op{Resource: ResourceKV, Action: ActionRead, Keys: KeyRange{Key: []byte("/a"), End: []byte("/b")}}
	write := Op{Resource: ResourceKV, Action: ActionWrite, Keys: KeyRange{Key: []byte("/a"), End: []byte("/b")}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name   string
		authz  Authorizer
		caller Identity
		op     Op
		kind   ErrorKind // 0: allowed
		effect Effect
	}{
		{"allow", fixedAuthz{d: Decision{Effect: Allow}}, web, read, 0, Allow},
		{"deny", fixedAuthz{d: Decision{Effect: Deny, Reason: "no"}}, web, read, KindDenied, 0},
		{"error denies", fixedAuthz{d: Decision{Effect: Allow}, err: errors.New("boom")}, web, read, KindDenied, 0},
		{"zero decision denies", fixedAuthz{}, web, read, KindDenied, 0},
		{"filter for a read", fixedAuthz{d: Decision{Effect: Filter}}, web, read, 0, Filter},
		{"filter for a write denies", fixedAuthz{d: Decision{Effect: Filter}}, web, write, KindDenied, 0},
		{"no caller", fixedAuthz{d: Decision{Effect: Allow}}, Identity{}, read, KindUnauthenticated, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eff := make([]Effect, 1)
			q := New(tt.authz, log).Begin(tt.caller)
			i := q.Ask(tt.op)
			if tt.op.Action == ActionRead {
				q.Narrow(i)
			}
			err := q.Authorize(context.Background())
			if err == nil {
				eff[0] = q.Effect(i)
			}
			if tt.kind == 0 {
				if err != nil || eff[0] != tt.effect {
					t.Fatalf("Authorize = %v, effect %v; want nil, %v", err, eff[0], tt.effect)
				}
				return
			}
			ge := AsError(err)
			if ge == nil || ge.Kind != tt.kind {
				t.Fatalf("Authorize = %v; want kind %d", err, tt.kind)
			}
		})
	}
}

func TestNames(t *testing.T) {
	if Deny.String() != "deny" || Filter.String() != "filter" || ResourceKV.String() != "kv" || ActionAdmin.String() != "admin" {
		t.Error("names")
	}
	if Resource(0).String() != "resource(0)" || Action(200).String() != "action(200)" {
		t.Error("unknown values must not print as a known name")
	}
	for _, s := range []string{"kv", "watch", "status"} {
		if r, err := ParseResource(s); err != nil || r.String() != s {
			t.Errorf("ParseResource(%q) = %v, %v", s, r, err)
		}
	}
	if _, err := ParseAction("fly"); err == nil {
		t.Error("ParseAction(fly) succeeded")
	}
}

func TestKeyRangeOverlaps(t *testing.T) {
	p := []byte("/_storegate/")
	tests := []struct {
		r    KeyRange
		want bool
	}{
		{KeyRange{Key: []byte("/_storegate/sessions/x")}, true},
		{KeyRange{Key: []byte("/_storegate")}, false},
		{KeyRange{Key: []byte("/app/x")}, false},
		{KeyRange{Key: []byte("/"), End: PrefixEnd([]byte("/"))}, true},
		{KeyRange{Key: []byte("/_s"), End: PrefixEnd([]byte("/_s"))}, true},
		{KeyRange{Key: []byte("/_storegate/a"), End: []byte("/_storegate/b")}, true},
		{KeyRange{Key: []byte("/app/"), End: PrefixEnd([]byte("/app/"))}, false},
		{KeyRange{Key: []byte("/a"), End: []byte{0}}, false},
		{KeyRange{Key: []byte("/"), End: []byte{0}}, true},
		{KeyRange{Key: []byte("/_storegate0"), End: []byte{0}}, false},
		{KeyRange{Key: []byte("/0"), End: []byte("/_storegate/")}, false},
	}
	for _, tt := range tests {
		if got := tt.r.Overlaps(p); got != tt.want {
			t.Errorf("[%q, %q).Overlaps(%q) = %v, want %v", tt.r.Key, tt.r.End, p, got, tt.want)
		}
	}
}

// countingObserver counts the decisions it sees.
type countingObserver struct{ n int }

func (o *countingObserver) Observe(context.Context, *Record) { o.n++ }

// TestRequestAllocations: an allowed request of one op, observed, costs
// one allocation, the Request itself (its ops and the observer's record
// come with it).
func TestRequestAllocations(t *testing.T) {
	web := Identity{ID: spiffeid.RequireFromString("spiffe://example.org/web")}
	read := Op{Protocol: ProtocolEtcd, Resource: ResourceKV, Action: ActionRead, Keys: KeyRange{Key: []byte("/a")}}
	obs := &countingObserver{}
	g := New(fixedAuthz{d: Decision{Effect: Allow}}, slog.New(slog.NewTextHandler(io.Discard, nil)),
		WithObserver(obs), WithReserved([]byte("/_storegate/")))
	ctx := context.Background()
	var err error
	n := testing.AllocsPerRun(100, func() {
		q := g.Begin(web)
		q.Narrow(q.Ask(read))
		err = q.Authorize(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%v allocations per request, want 1", n)
	}
	if obs.n == 0 {
		t.Error("the observer saw no decision")
	}
}
