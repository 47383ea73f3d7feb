package resume

import (
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// kvRec is a key-value as an event carries it.
type kvRec struct {
	Key, Value           string
	Create, Mod, Version int64
	Lease                int64
}

func (k *kvRec) String() string {
	if k == nil {
		return "-"
	}
	return fmt.Sprintf("%s=%q@c%d/m%d/v%d/l%x", k.Key, k.Value, k.Create, k.Mod, k.Version, k.Lease)
}

// event is one watch event, compared field by field.
type event struct {
	Type string
	KV   kvRec
	Prev *kvRec // nil when the watch did not ask for it (or there was none)
}

func (e event) String() string { return fmt.Sprintf("%s %s prev %s", e.Type, &e.KV, e.Prev) }

func record(kv *mvccpb.KeyValue) kvRec {
	return kvRec{Key: string(kv.Key), Value: string(kv.Value), Create: kv.CreateRevision, Mod: kv.ModRevision,
		Version: kv.Version, Lease: kv.Lease}
}

func toEvent(ev *mvccpb.Event, withPrev bool) event {
	e := event{Type: ev.Type.String(), KV: record(ev.Kv)}
	if withPrev && ev.PrevKv != nil {
		p := record(ev.PrevKv)
		e.Prev = &p
	}
	return e
}

// diffEvents describes how got differs from want ("" when it does not):
// the first position where they part, and what lies around it.
func diffEvents(got, want []event) string {
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i].String() == want[i].String() {
		i++
	}
	if i == len(got) && i == len(want) {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "got %d events, want %d; first difference at #%d\n", len(got), len(want), i)
	for j := max(0, i-2); j < min(i+3, max(len(got), len(want))); j++ {
		g, w := "(none)", "(none)"
		if j < len(got) {
			g = got[j].String()
		}
		if j < len(want) {
			w = want[j].String()
		}
		fmt.Fprintf(&b, "  #%d got  %s\n  #%d want %s\n", j, g, j, w)
	}
	return b.String()
}
