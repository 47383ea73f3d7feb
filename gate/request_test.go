package gate

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// keyAuthz allows ops by key: keys starting with "/ok" are allowed, with
// "/part" filtered, anything else denied with a reason naming the key.
type keyAuthz struct{ calls *int }

func (a keyAuthz) Authorize(_ context.Context, _ Identity, op *Op) (Decision, error) {
	if a.calls != nil {
		*a.calls++
	}
	k := string(op.Keys.Key)
	switch {
	case op.Foreign:
		return Decision{Effect: Deny, Reason: "foreign " + op.Owner}, nil
	case strings.HasPrefix(k, "/ok"), op.Keys.Key == nil:
		return Decision{Effect: Allow}, nil
	case strings.HasPrefix(k, "/part"):
		return Decision{Effect: Filter}, nil
	}
	return Decision{Effect: Deny, Reason: "secret key " + k}, nil
}

func TestRequestRules(t *testing.T) {
	web := Identity{ID: spiffeid.RequireFromString("spiffe://example.org/web")}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := New(keyAuthz{}, log, WithReserved([]byte("/_storegate/")))
	kv := func(act Action, key, end string) Op {
		op := Op{Resource: ResourceKV, Action: act, Keys: KeyRange{Key: []byte(key)}}
		if end != "" {
			op.Keys.End = []byte(end)
		}
		return op
	}
	t.Run("filter only where narrowable", func(t *testing.T) {
		q := g.Begin(web)
		q.Ask(kv(ActionRead, "/part", "/partz"))
		if err := q.Authorize(context.Background()); AsError(err) == nil || AsError(err).Kind != KindDenied {
			t.Fatalf("a filtered op the front cannot narrow: %v, want denied", err)
		}
		q = g.Begin(web)
		i := q.Ask(kv(ActionRead, "/part", "/partz"))
		q.Narrow(i)
		if err := q.Authorize(context.Background()); err != nil || q.Effect(i) != Filter || !q.Filtered() {
			t.Fatalf("narrowable filtered op: %v, effect %v", err, q.Effect(i))
		}
	})
	t.Run("derived denial says nothing of what it names", func(t *testing.T) {
		q := g.Begin(web)
		q.Ask(kv(ActionWrite, "/ok/a", ""))
		q.Derive(kv(ActionWrite, "/hidden/name", ""))
		err := q.Authorize(context.Background())
		ge := AsError(err)
		if ge == nil || ge.Kind != KindDenied || strings.Contains(ge.Reason, "hidden") || strings.Contains(err.Error(), "hidden") {
			t.Fatalf("derived denial %v (reason %q) names the hidden key", err, ge.Reason)
		}
		if !strings.Contains(ge.Detail, "/hidden/name") {
			t.Fatalf("the full reason is lost: %q", ge.Detail)
		}
	})
	t.Run("nothing is derived before the asked ops are allowed", func(t *testing.T) {
		ran := false
		q := g.Begin(web)
		q.Ask(kv(ActionWrite, "/denied", ""))
		q.DeriveAfter(func(context.Context, *Request) error { ran = true; return nil })
		if err := q.Authorize(context.Background()); err == nil || ran {
			t.Fatalf("Authorize = %v, derivation ran: %v", err, ran)
		}
		q = g.Begin(web)
		q.Ask(kv(ActionWrite, "/ok", ""))
		q.DeriveAfter(func(_ context.Context, q *Request) error {
			ran = true
			q.Derive(Op{Resource: ResourceLease, Action: ActionWrite, Lease: 7, Foreign: true, Owner: "spiffe://example.org/admin"})
			return nil
		})
		err := q.Authorize(context.Background())
		if !ran || AsError(err) == nil || strings.Contains(AsError(err).Reason, "admin") {
			t.Fatalf("derived foreign op: ran %v, err %v", ran, err)
		}
	})
	t.Run("reserved prefix", func(t *testing.T) {
		for _, op := range []Op{kv(ActionRead, "/_storegate/leases/1", ""), kv(ActionWrite, "/_storegate/x", ""),
			kv(ActionDelete, "/", "\x00"), kv(ActionRead, "/_", "/`")} {
			q := g.Begin(web)
			q.Ask(op)
			if err := q.Authorize(context.Background()); AsError(err) == nil {
				t.Errorf("%v on [%q, %q) allowed", op.Action, op.Keys.Key, op.Keys.End)
			}
		}
		// A narrowable read over it is narrowed, even when policy allows it
		// whole, and the reserved keys are never readable.
		allowAll := New(fixedAuthz{d: Decision{Effect: Allow}}, log, WithReserved([]byte("/_storegate/")))
		q := allowAll.Begin(web)
		i := q.Ask(kv(ActionRead, "/", "\x00"))
		q.Narrow(i)
		if err := q.Authorize(context.Background()); err != nil || q.Effect(i) != Filter {
			t.Fatalf("read over the reserved prefix: %v, effect %v; want filtered", err, q.Effect(i))
		}
		if q.Readable(context.Background(), ProtocolEtcd, ResourceKV, "", []byte("/_storegate/leases/1")) {
			t.Fatal("a reserved key is readable")
		}
		if !q.Readable(context.Background(), ProtocolEtcd, ResourceKV, "", []byte("/app")) {
			t.Fatal("an ordinary key is not readable")
		}
	})
	t.Run("huge keys make short reasons", func(t *testing.T) {
		q := g.Begin(web)
		q.Ask(kv(ActionWrite, "/x"+strings.Repeat("k", 1<<20), ""))
		ge := AsError(q.Authorize(context.Background()))
		if ge == nil || len(ge.Reason) > 1024 {
			t.Fatalf("reason of %d bytes", len(ge.Reason))
		}
	})
	t.Run("policy change wakes streams", func(t *testing.T) {
		ch := g.PolicyChanged()
		g.NotifyPolicyChange()
		select {
		case <-ch:
		default:
			t.Fatal("PolicyChanged was not closed")
		}
		if g.PolicyChanged() == ch {
			t.Fatal("a new channel was not made")
		}
	})
}
