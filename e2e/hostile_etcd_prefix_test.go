package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// heSeed puts the key space every prefix attack aims at: web's own keys,
// secrets under /app/secret/, neighbours that share a byte prefix with
// /app/ (/app, /appz, /ap), keys outside, and odd bytes.
var heSeed = map[string]string{
	"/app/a":               "a",
	"/app/b":               "b",
	"/app":                 "app-exact",
	"/app/secret":          "not-under-secret/", // readable: /app/** but not /app/secret/**
	"/app/secret\xff":      "also-readable",
	"/app/secret/token":    "S3CRET-token",
	"/app/secret/z":        "S3CRET-z",
	"/app/secret/\x00nul":  "S3CRET-nul",
	"/app/secret/\xff\xfe": "S3CRET-ff",
	"/app/\xff\xfe":        "invalid-utf8",
	"/app/\x00":            "nul",
	"/appz/x":              "HIDDEN-appz",
	"/ap":                  "HIDDEN-ap",
	"/other/x":             "HIDDEN-other",
	"\x00first":            "HIDDEN-nul-first",
	"\xff\xff":             "HIDDEN-ff-last",
	"/shared/motd":         "hi",
	"/shared/a/b":          "HIDDEN-shared-deep",
}

// heHiddenValues are the values web may never see.
func heHiddenValues() []string {
	var out []string
	for k, v := range heSeed {
		if !webReadable(k) {
			out = append(out, v)
		}
	}
	return out
}

// heRanges are ranges an attacker computes, several of them wrongly on
// purpose, to reach past /app/ or into /app/secret/.
var heRanges = []struct{ name, key, end string }{
	{"from /app/ to the end", "/app/", "\x00"},
	{"everything from \\x00", "\x00", "\x00"},
	{"everything from \\x01", "\x01", "\x00"},
	{"everything from /", "/", "\x00"},
	{"all of /", "/", "0"},
	{"prefix /app/", "/app/", "/app0"},
	{"prefix /app (no slash)", "/app", "/apq"},
	{"/app/ into /appz", "/app/", "/appz\xff"},
	{"prefix /app/secret without slash", "/app/secret", "/app/secret0"},
	{"prefix /app/secret/", "/app/secret/", "/app/secret0"},
	{"/app/secret/ to \\xff", "/app/secret/", "/app/secret/\xff"},
	{"/app/a spanning into secrets", "/app/a", "/app/secret/zz"},
	{"/app/ to \\xff\\xff", "/app/", "/app/\xff\xff"},
	{"secret \\x00 from-key", "/app/secret/\x00", "\x00"},
	{"/app/\\xff from-key", "/app/\xff", "\x00"},
	{"/app to past secret", "/app", "/app/secret/~"},
	{"invalid utf8 end", "/app/", "/app/\xc3\x28"},
	{"one secret key", "/app/secret/token", ""},
	{"one missing secret key", "/app/secret/token\x00", ""},
	{"one key outside", "/other/x", ""},
	{"empty range at secret", "/app/secret/", "/app/secret/"},
	{"reversed", "/app/z", "/app/a"},
	{"end \\x01 below key", "/app/", "\x01"},
	{"\\xff from-key", "\xff", "\x00"},
	{"empty key from-key", "", "\x00"},
	{"empty key, empty end", "", ""},
}

// TestHostileEtcdPrefix: class 1, prefix semantics. Whatever range web
// computes, it never reads a key or a count of /app/secret/** or outside
// /app/**, never deletes one; elections and locks are judged on NAME/.
func TestHostileEtcdPrefix(t *testing.T) {
	e := newHeEnv(t, "")
	for k, v := range heSeed {
		e.put(t, k, v)
	}
	kv := pb.NewKVClient(e.web)
	hidden := heHiddenValues()

	// readableIn is what web may read of [key, end), from etcd directly.
	readableIn := func(t *testing.T, key, end []byte) map[string]string {
		out := map[string]string{}
		for k, v := range e.all(t) {
			if inRange([]byte(k), key, end) && webReadable(k) {
				out[k] = string(v.Value)
			}
		}
		return out
	}
	type variant struct {
		name string
		mod  func(*pb.RangeRequest)
	}
	variants := []variant{
		{"plain", func(*pb.RangeRequest) {}},
		{"limit 1", func(r *pb.RangeRequest) { r.Limit = 1 }},
		{"count only", func(r *pb.RangeRequest) { r.CountOnly = true }},
		{"keys only, limit 2", func(r *pb.RangeRequest) { r.KeysOnly, r.Limit = true, 2 }},
		{"descending by key, limit 1", func(r *pb.RangeRequest) {
			r.SortOrder, r.SortTarget, r.Limit = pb.RangeRequest_DESCEND, pb.RangeRequest_KEY, 1
		}},
		{"by create desc, limit 1, serializable", func(r *pb.RangeRequest) {
			r.SortOrder, r.SortTarget, r.Limit, r.Serializable = pb.RangeRequest_DESCEND, pb.RangeRequest_CREATE, 1, true
		}},
		{"by value asc, count only, limit 1", func(r *pb.RangeRequest) {
			r.SortOrder, r.SortTarget, r.CountOnly, r.Limit = pb.RangeRequest_ASCEND, pb.RangeRequest_VALUE, true, 1
		}},
	}
	checkRange := func(t *testing.T, what string, r *pb.RangeRequest, resp *pb.RangeResponse, err error) {
		t.Helper()
		if err != nil {
			// Refusing is always safe; but only as etcd refuses.
			if c := status.Code(err); c != codes.PermissionDenied && c != codes.InvalidArgument {
				t.Errorf("%s: %v, want PermissionDenied (or InvalidArgument for an empty key)", what, err)
			}
			heNoLeak(t, what, hidden, err.Error())
			return
		}
		want := readableIn(t, r.Key, r.RangeEnd)
		for _, got := range resp.Kvs {
			k := string(got.Key)
			if !webReadable(k) || !inRange(got.Key, r.Key, r.RangeEnd) {
				t.Errorf("%s: returned %q (%q), which web may not read", what, k, got.Value)
				continue
			}
			if !r.KeysOnly && want[k] != string(got.Value) {
				t.Errorf("%s: %q = %q, etcd has %q", what, k, got.Value, want[k])
			}
		}
		if resp.Count != int64(len(want)) {
			t.Errorf("%s: count %d, web may read %d keys in the range (%q): count counts hidden keys or is wrong",
				what, resp.Count, len(want), keysOf(want))
		}
		wantMore := r.Limit > 0 && int64(len(want)) > r.Limit && !r.CountOnly
		if r.CountOnly {
			wantMore = r.Limit > 0 && int64(len(want)) > r.Limit
		}
		if resp.More && !wantMore {
			t.Errorf("%s: more=true but only %d readable keys with limit %d", what, len(want), r.Limit)
		}
		if r.CountOnly && len(resp.Kvs) != 0 {
			t.Errorf("%s: count_only returned %d kvs", what, len(resp.Kvs))
		}
		if r.Limit > 0 && !r.CountOnly && int64(len(resp.Kvs)) > r.Limit {
			t.Errorf("%s: %d kvs over limit %d", what, len(resp.Kvs), r.Limit)
		}
	}

	t.Run("Range", func(t *testing.T) {
		for _, rg := range heRanges {
			for _, v := range variants {
				r := &pb.RangeRequest{Key: []byte(rg.key), RangeEnd: []byte(rg.end)}
				v.mod(r)
				var tr heTrailer
				resp, err := kv.Range(heCtx(t), r, tr.opt())
				what := fmt.Sprintf("Range %s [%q,%q) %s", rg.name, rg.key, rg.end, v.name)
				checkRange(t, what, r, resp, err)
				heNoLeak(t, what+" trailer", hidden, tr.reason())
			}
		}
		// The single secret key is refused whether or not it exists.
		for _, k := range []string{"/app/secret/token", "/app/secret/nope", "/app/secret/", "/app/secret//token", "/other/x", "/appz/x", "/app/secret/\x00nul"} {
			_, err := kv.Range(heCtx(t), &pb.RangeRequest{Key: []byte(k)})
			heDenied(t, "Range "+fmt.Sprintf("%q", k), err)
		}
	})

	t.Run("RangeStream", func(t *testing.T) {
		for _, rg := range heRanges {
			r := &pb.RangeRequest{Key: []byte(rg.key), RangeEnd: []byte(rg.end)}
			what := fmt.Sprintf("RangeStream %s [%q,%q)", rg.name, rg.key, rg.end)
			s, err := kv.RangeStream(heCtx(t), r)
			if err != nil {
				checkRange(t, what, r, nil, err)
				continue
			}
			merged := &pb.RangeResponse{}
			var serr error
			for {
				m, err := s.Recv()
				if err != nil {
					if err.Error() != "EOF" && status.Code(err) != codes.OK {
						serr = err
					}
					break
				}
				if rr := m.GetRangeResponse(); rr != nil {
					merged.Kvs = append(merged.Kvs, rr.Kvs...)
					merged.Count = max(merged.Count, rr.Count)
					merged.More = merged.More || rr.More
				}
			}
			if serr != nil {
				checkRange(t, what, r, nil, serr)
				continue
			}
			for _, got := range merged.Kvs {
				if !webReadable(string(got.Key)) {
					t.Errorf("%s: streamed %q (%q)", what, got.Key, got.Value)
				}
			}
			if want := readableIn(t, r.Key, r.RangeEnd); merged.Count > int64(len(want)) {
				t.Errorf("%s: count %d > %d readable keys", what, merged.Count, len(want))
			}
		}
	})

	t.Run("DeleteRange", func(t *testing.T) {
		for _, rg := range heRanges {
			for _, prev := range []bool{false, true} {
				for k, v := range heSeed {
					if webWritable(k) {
						e.put(t, k, v) // web's own keys come back for every attack
					}
				}
				before := e.all(t)
				resp, err := kv.DeleteRange(heCtx(t), &pb.DeleteRangeRequest{Key: []byte(rg.key), RangeEnd: []byte(rg.end), PrevKv: prev})
				what := fmt.Sprintf("DeleteRange %s [%q,%q) prev_kv=%v", rg.name, rg.key, rg.end, prev)
				if err != nil {
					if c := status.Code(err); c != codes.PermissionDenied && c != codes.InvalidArgument {
						t.Errorf("%s: %v", what, err)
					}
				} else {
					for _, p := range resp.PrevKvs {
						if !webReadable(string(p.Key)) {
							t.Errorf("%s: prev_kv %q (%q) returned", what, p.Key, p.Value)
						}
					}
				}
				after := e.all(t)
				for k, b := range before {
					if webWritable(k) || heReserved(k) {
						continue
					}
					a, ok := after[k]
					if !ok {
						t.Errorf("%s: deleted %q in etcd, which web may not delete", what, k)
					} else if a.ModRevision != b.ModRevision {
						t.Errorf("%s: %q changed in etcd", what, k)
					}
				}
			}
		}
	})

	t.Run("Watch", func(t *testing.T) {
		for i, rg := range heRanges {
			for _, fromStart := range []bool{false, true} {
				what := fmt.Sprintf("Watch %s [%q,%q) history=%v", rg.name, rg.key, rg.end, fromStart)
				w := heOpenWatch(t, e.web)
				cr := &pb.WatchCreateRequest{Key: []byte(rg.key), RangeEnd: []byte(rg.end), PrevKv: true}
				if fromStart {
					cr.StartRevision = 1 // replay every event etcd still has
				}
				w.create(t, cr)
				first := w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Created || r.Canceled })
				created := first[len(first)-1]
				if created.Canceled {
					if created.CancelReason != "etcdserver: permission denied" && created.CancelReason != "mvcc: watcher range is empty" {
						t.Errorf("%s: cancel reason %q", what, created.CancelReason)
					}
					w.stop()
					continue
				}
				// Hidden keys change, then a marker web may read, if the range
				// has one.
				for _, k := range []string{"/app/secret/token", "/app/secret/z", "/appz/x", "/other/x", "/ap", "\x00first", "\xff\xff", "/shared/a/b"} {
					e.put(t, k, heSeed[k])
				}
				marker := fmt.Sprintf("/app/m%02d", i)
				var events []*pb.WatchResponse
				if inRange([]byte(marker), []byte(rg.key), []byte(rg.end)) || (len(rg.key) == 0 && rg.end == "\x00") {
					e.put(t, marker, "marker")
					events = w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool {
						for _, ev := range r.Events {
							if string(ev.Kv.Key) == marker {
								return true
							}
						}
						return r.Canceled
					})
				} else {
					events = w.drain(300 * time.Millisecond)
				}
				for _, r := range append(first, events...) {
					for _, ev := range r.Events {
						if !webReadable(string(ev.Kv.Key)) {
							t.Errorf("%s: event on %q (%q) delivered", what, ev.Kv.Key, ev.Kv.Value)
						}
						if ev.PrevKv != nil && !webReadable(string(ev.PrevKv.Key)) {
							t.Errorf("%s: prev kv %q delivered", what, ev.PrevKv.Key)
						}
					}
				}
				w.stop()
			}
		}
	})

	// Elections: admin leads /app/secret/el, so there is a leader key to
	// leak (and /app/secret/ itself holds secrets, which Leader on
	// "/app/secret" would return as the first-created key).
	adminLease := heGrant(t, e.admin, 120)
	webLease := heGrant(t, e.web, 120)
	aElect := v3electionpb.NewElectionClient(e.admin)
	camp, err := aElect.Campaign(heCtx(t), &v3electionpb.CampaignRequest{Name: []byte("/app/secret/el"), Lease: adminLease, Value: []byte("ADMIN-PROPOSAL-SECRET")})
	if err != nil {
		t.Fatalf("admin campaigns in /app/secret/el: %v", err)
	}
	adminKey := camp.Leader.Key
	if !bytes.HasPrefix(adminKey, []byte("/app/secret/")) {
		t.Fatalf("admin's leader key %q", adminKey)
	}
	secrets := append(hidden, "ADMIN-PROPOSAL-SECRET", string(adminKey))
	wElect := v3electionpb.NewElectionClient(e.web)

	t.Run("Election", func(t *testing.T) {
		deniedNames := []string{"/app/secret/el", "/app/secret", "/app/secret/", "/app", "/app/", "", "/", "/app/secret\x00", "/ap", "/app/secret/token", "/_storegate"}
		for _, n := range deniedNames {
			resp, err := wElect.Leader(heCtx(t), &v3electionpb.LeaderRequest{Name: []byte(n)})
			heDenied(t, fmt.Sprintf("Leader %q", n), err)
			if resp != nil {
				heNoLeak(t, fmt.Sprintf("Leader %q", n), secrets, resp.String())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			obs, err := wElect.Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte(n)})
			if err == nil {
				var m *v3electionpb.LeaderResponse
				m, err = obs.Recv()
				if m != nil {
					heNoLeak(t, fmt.Sprintf("Observe %q", n), secrets, m.String())
				}
			}
			cancel()
			heDenied(t, fmt.Sprintf("Observe %q", n), err)

			ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
			_, err = wElect.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte(n), Lease: webLease, Value: []byte("web")})
			cancel()
			heDenied(t, fmt.Sprintf("Campaign %q", n), err)
		}
		// Nothing of web's landed anywhere: no key on web's lease outside
		// /app/election/.
		for k, v := range e.all(t) {
			if v.Lease == webLease && !strings.HasPrefix(k, "/app/election/") && !heReserved(k) {
				t.Errorf("a denied campaign wrote %q on web's lease", k)
			}
		}

		// A leader key not under its name, or a name web may not use.
		leaders := []*v3electionpb.LeaderKey{
			{Name: []byte("/app/election/e1"), Key: adminKey, Rev: camp.Leader.Rev, Lease: adminLease},
			{Name: []byte("/app/secret/el"), Key: adminKey, Rev: camp.Leader.Rev, Lease: adminLease},
			{Name: []byte("/app/secret"), Key: adminKey, Rev: camp.Leader.Rev, Lease: adminLease},
			{Name: []byte("/app/election/e1"), Key: adminKey, Rev: camp.Leader.Rev, Lease: webLease},
			{Name: []byte("/app/election"), Key: []byte("/app/secret/x"), Rev: 1, Lease: webLease},
			{Name: []byte("/app/election/e1/"), Key: []byte("/app/election/e1/x"), Rev: 1, Lease: webLease}, // key not under "NAME/" = "/app/election/e1//"
			{Name: []byte("/app/election/e1"), Key: []byte("/app/election/e10/x"), Rev: 1, Lease: webLease},
			{Name: []byte("/app/election/e1"), Key: []byte("/app/election/e1"), Rev: 1, Lease: webLease},
			{Name: []byte(""), Key: adminKey, Rev: camp.Leader.Rev, Lease: adminLease},
			{Name: []byte("/app/election/e1"), Key: []byte("/other/x"), Rev: 1, Lease: webLease},
		}
		for _, l := range leaders {
			_, err := wElect.Proclaim(heCtx(t), &v3electionpb.ProclaimRequest{Leader: l, Value: []byte("PWNED")})
			heDenied(t, fmt.Sprintf("Proclaim name %q key %q", l.Name, l.Key), err)
			_, err = wElect.Resign(heCtx(t), &v3electionpb.ResignRequest{Leader: l})
			heDenied(t, fmt.Sprintf("Resign name %q key %q", l.Name, l.Key), err)
		}
		if got := e.get(t, string(adminKey)); got == nil || string(got.Value) != "ADMIN-PROPOSAL-SECRET" {
			t.Errorf("admin's leader key in etcd after web's attacks: %v", got)
		}
		if got := e.get(t, "/other/x"); got == nil || string(got.Value) != "HIDDEN-other" {
			t.Errorf("/other/x in etcd: %v", got)
		}

		// The allowed path still works, and writes only under its name.
		c, err := wElect.Campaign(heCtx(t), &v3electionpb.CampaignRequest{Name: []byte("/app/election/e1"), Lease: webLease, Value: []byte("web-leads")})
		if err != nil {
			t.Fatalf("web campaigns in /app/election/e1: %v", err)
		}
		if got := e.get(t, string(c.Leader.Key)); !strings.HasPrefix(string(c.Leader.Key), "/app/election/e1/") || got == nil || got.Lease != webLease {
			t.Errorf("web's leader key %q in etcd: %v", c.Leader.Key, got)
		}
		if l, err := wElect.Leader(heCtx(t), &v3electionpb.LeaderRequest{Name: []byte("/app/election/e1")}); err != nil || string(l.Kv.Value) != "web-leads" {
			t.Errorf("Leader /app/election/e1: %v %v", l, err)
		}
	})

	t.Run("Lock", func(t *testing.T) {
		aLock := v3lockpb.NewLockClient(e.admin)
		held, err := aLock.Lock(heCtx(t), &v3lockpb.LockRequest{Name: []byte("/app/secret/l"), Lease: adminLease})
		if err != nil {
			t.Fatalf("admin locks /app/secret/l: %v", err)
		}
		wLock := v3lockpb.NewLockClient(e.web)
		for _, n := range []string{"/app/secret", "/app/secret/l", "/app", "/app/", "", "/", "/other", "/app/locksX", "/app/lock", "/_storegate/leases"} {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := wLock.Lock(ctx, &v3lockpb.LockRequest{Name: []byte(n), Lease: webLease})
			cancel()
			heDenied(t, fmt.Sprintf("Lock %q", n), err)
			got := e.get(t, fmt.Sprintf("%s/%x", n, webLease))
			// "/_storegate/leases/<lease>" is the gateway's own record of the
			// lease's owner: a Lock there would have overwritten it (with an
			// empty value).
			if n == "/_storegate/leases" && got != nil && string(got.Value) == "spiffe://example.org/web" {
				got = nil
			}
			if got != nil {
				t.Errorf("Lock %q: %q written in etcd (value %q)", n, got.Key, got.Value)
			}
		}
		for _, k := range []string{string(held.Key), "/app/secret/token", "/other/x", "/app/secret/l", "/appz/x"} {
			_, err := wLock.Unlock(heCtx(t), &v3lockpb.UnlockRequest{Key: []byte(k)})
			heDenied(t, fmt.Sprintf("Unlock %q", k), err)
		}
		for _, k := range []string{string(held.Key), "/app/secret/token", "/other/x", "/appz/x"} {
			if e.get(t, k) == nil {
				t.Errorf("%q deleted in etcd by a denied Unlock", k)
			}
		}
		// Allowed: a lock under /app/locks/ writes only there.
		for _, n := range []string{"/app/locks/l1", "/app/locks"} {
			r, err := wLock.Lock(heCtx(t), &v3lockpb.LockRequest{Name: []byte(n), Lease: webLease})
			if err != nil {
				t.Errorf("Lock %q: %v", n, err)
				continue
			}
			if !strings.HasPrefix(string(r.Key), n+"/") || e.get(t, string(r.Key)) == nil {
				t.Errorf("Lock %q: key %q", n, r.Key)
			}
			if _, err := wLock.Unlock(heCtx(t), &v3lockpb.UnlockRequest{Key: r.Key}); err != nil {
				t.Errorf("Unlock %q: %v", r.Key, err)
			}
		}
	})
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
