package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
)

// TestHostileEtcdReserved: the gateway's own records under /_storegate/
// are out of every caller's reach, admin's included: no read, write,
// delete, watch, compare, lock or campaign there, and a range or watch
// spanning it is narrowed (answers and counts without reserved keys).
func TestHostileEtcdReserved(t *testing.T) {
	e := newHeEnv(t, "")
	for k, v := range heSeed {
		e.put(t, k, v)
	}
	adminLease := heGrant(t, e.admin, 120)
	webLease := heGrant(t, e.web, 120)
	records := []string{heOwnerKey(adminLease), heOwnerKey(webLease)}
	before := e.all(t)
	for _, r := range records {
		if before[r] == nil {
			t.Fatalf("no owner record %q in etcd after a grant", r)
		}
	}
	ids := []string{"spiffe://example.org/admin", "spiffe://example.org/web"}
	callers := []struct {
		name string
		conn *grpc.ClientConn
	}{{"admin", e.admin}, {"web", e.web}}

	// intact: the records are still in etcd, untouched.
	intact := func(t *testing.T, what string) {
		t.Helper()
		after := e.all(t)
		for _, r := range records {
			if a := after[r]; a == nil || a.ModRevision != before[r].ModRevision {
				t.Errorf("%s: owner record %q changed or gone in etcd: %v", what, r, a)
			}
		}
		for k, a := range after {
			// New owner records come with new grants; anything else is not
			// the gateway's.
			if heReserved(k) && before[k] == nil && k != heOwnerKey(a.Lease) {
				t.Errorf("%s: %q written under the reserved prefix", what, k)
			}
		}
	}
	// nonReserved counts the keys of [key, end) outside /_storegate/, directly.
	nonReserved := func(t *testing.T, key, end string) int64 {
		n := int64(0)
		for k := range e.all(t) {
			if inRange([]byte(k), []byte(key), []byte(end)) && !heReserved(k) {
				n++
			}
		}
		return n
	}

	single := []string{records[0], records[1], "/_storegate/", "/_storegate/x", "/_storegate/\x00", "/_storegate/leases/",
		"/_storegate//leases/" + records[0][len("/_storegate/leases/"):], "/_storegate/\xff\xfe"}
	spans := []struct{ key, end string }{
		{"/_storegate/", "/_storegate0"}, {"/_storegate/leases/", "/_storegate/leases0"}, {"/_storegate", "/_storegatf"},
		{"\x00", "\x00"}, {"/", "\x00"}, {"/", "0"}, {"/_", "/`"}, {"/_storegate/", "\x00"}, {"/_storegate/\x00", "/_storegate/\xff"},
	}

	t.Run("read", func(t *testing.T) {
		for _, c := range callers {
			kv := pb.NewKVClient(c.conn)
			// A single key is refused, or narrowed to nothing: never read.
			for _, k := range single {
				resp, err := kv.Range(heCtx(t), &pb.RangeRequest{Key: []byte(k)})
				if err != nil {
					heDenied(t, fmt.Sprintf("%s reads %q", c.name, k), err)
				} else if len(resp.Kvs) != 0 || resp.Count != 0 || resp.More {
					t.Errorf("%s reads %q: %v", c.name, k, resp)
				}
			}
			for _, sp := range spans {
				for _, mod := range []func(*pb.RangeRequest){
					func(*pb.RangeRequest) {},
					func(r *pb.RangeRequest) { r.CountOnly = true },
					func(r *pb.RangeRequest) { r.Limit = 1; r.SortOrder = pb.RangeRequest_DESCEND },
					func(r *pb.RangeRequest) { r.KeysOnly = true; r.SortTarget = pb.RangeRequest_CREATE },
				} {
					r := &pb.RangeRequest{Key: []byte(sp.key), RangeEnd: []byte(sp.end)}
					mod(r)
					what := fmt.Sprintf("%s reads [%q,%q) count_only=%v limit=%d", c.name, sp.key, sp.end, r.CountOnly, r.Limit)
					resp, err := kv.Range(heCtx(t), r)
					if err != nil {
						if !heIsDenied(err) {
							t.Errorf("%s: %v", what, err)
						}
						continue
					}
					for _, got := range resp.Kvs {
						if heReserved(string(got.Key)) {
							t.Errorf("%s: reserved %q (%q) returned", what, got.Key, got.Value)
						}
					}
					heNoLeak(t, what, ids[:1], resp.String())
					if c.name == "admin" && resp.Count != nonReserved(t, sp.key, sp.end) {
						t.Errorf("%s: count %d, etcd has %d keys outside the reserved prefix there", what, resp.Count, nonReserved(t, sp.key, sp.end))
					}
					if c.name == "web" && resp.Count > nonReserved(t, sp.key, sp.end) {
						t.Errorf("%s: count %d counts reserved keys", what, resp.Count)
					}
				}
			}
			// RangeStream of everything.
			s, err := kv.RangeStream(heCtx(t), &pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")})
			if err == nil {
				for {
					m, err := s.Recv()
					if err != nil {
						break
					}
					for _, got := range m.GetRangeResponse().GetKvs() {
						if heReserved(string(got.Key)) {
							t.Errorf("%s RangeStream: reserved %q returned", c.name, got.Key)
						}
					}
				}
			}
		}
		// Admin's own lease: its keys never include the record.
		r, err := pb.NewLeaseClient(e.admin).LeaseTimeToLive(heCtx(t), &pb.LeaseTimeToLiveRequest{ID: adminLease, Keys: true})
		if err != nil {
			t.Errorf("admin's timetolive of its lease: %v", err)
		} else {
			for _, k := range r.Keys {
				if heReserved(string(k)) {
					t.Errorf("admin's timetolive shows %q", k)
				}
			}
		}
		if _, _, keys := e.ttl(t, adminLease); len(keys) == 0 || keys[0] != records[0] {
			t.Errorf("etcd's keys on admin's lease: %q, want the record", keys)
		}
	})

	t.Run("write and delete", func(t *testing.T) {
		for _, c := range callers {
			kv := pb.NewKVClient(c.conn)
			for _, k := range single {
				_, err := kv.Put(heCtx(t), &pb.PutRequest{Key: []byte(k), Value: []byte(ids[1])})
				heDenied(t, fmt.Sprintf("%s puts %q", c.name, k), err)
				_, err = kv.Put(heCtx(t), &pb.PutRequest{Key: []byte(k), Value: []byte(ids[1]), Lease: webLease, PrevKv: true})
				heDenied(t, fmt.Sprintf("%s puts %q on a lease", c.name, k), err)
				_, err = kv.DeleteRange(heCtx(t), &pb.DeleteRangeRequest{Key: []byte(k)})
				heDenied(t, fmt.Sprintf("%s deletes %q", c.name, k), err)
				_, err = kv.Txn(heCtx(t), heNest(4, heOpPut(k, ids[1], 0), true))
				heDenied(t, fmt.Sprintf("%s puts %q deep in a txn", c.name, k), err)
			}
			for _, sp := range spans {
				_, err := kv.DeleteRange(heCtx(t), &pb.DeleteRangeRequest{Key: []byte(sp.key), RangeEnd: []byte(sp.end)})
				heDenied(t, fmt.Sprintf("%s deletes [%q,%q)", c.name, sp.key, sp.end), err)
				_, err = kv.Txn(heCtx(t), heNest(3, heOpDel(sp.key, sp.end), false))
				heDenied(t, fmt.Sprintf("%s deletes [%q,%q) in a txn", c.name, sp.key, sp.end), err)
			}
			intact(t, c.name)
		}
		// Nothing but the records moved for admin's failed attempts either.
		if got := e.get(t, "/other/x"); got == nil {
			t.Error("a refused delete removed /other/x")
		}
	})

	t.Run("compare", func(t *testing.T) {
		for _, c := range callers {
			kv := pb.NewKVClient(c.conn)
			for _, guess := range ids {
				for _, cmp := range []*pb.Compare{
					{Key: []byte(records[0]), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte(guess)}},
					{Key: []byte("/_storegate/"), RangeEnd: []byte("/_storegate0"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte(guess)}},
					{Key: []byte("/"), RangeEnd: []byte("\x00"), Target: pb.Compare_CREATE, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}},
					{Key: []byte(records[1]), Target: pb.Compare_LEASE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Lease{Lease: webLease}},
				} {
					resp, err := kv.Txn(heCtx(t), &pb.TxnRequest{Compare: []*pb.Compare{cmp}, Success: []*pb.RequestOp{heOpPut("/app/cmp-won", "1", 0)}})
					heDenied(t, fmt.Sprintf("%s compares [%q,%q) with %q", c.name, cmp.Key, cmp.RangeEnd, guess), err)
					if resp != nil {
						t.Errorf("%s: compare answered succeeded=%v", c.name, resp.Succeeded)
					}
				}
			}
		}
		if e.get(t, "/app/cmp-won") != nil {
			t.Error("a refused compare's txn wrote /app/cmp-won")
		}
	})

	t.Run("watch", func(t *testing.T) {
		w := heOpenWatch(t, e.admin)
		for id, sp := range []struct{ key, end string }{{"/_storegate/", "/_storegate0"}, {records[0], ""}, {"/_storegate/leases/", "\x00"}} {
			w.create(t, &pb.WatchCreateRequest{Key: []byte(sp.key), RangeEnd: []byte(sp.end), StartRevision: 1, WatchId: int64(100 + id)})
		}
		// Admin's watch of everything, history included.
		w.create(t, &pb.WatchCreateRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), StartRevision: 1, PrevKv: true, WatchId: 7})
		// New records appear while it watches, then a marker.
		heGrant(t, e.web, 60)
		heGrant(t, e.admin, 60)
		e.put(t, "/zz-marker", "m")
		got := w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool {
			for _, ev := range r.Events {
				if string(ev.Kv.Key) == "/zz-marker" {
					return true
				}
			}
			return false
		})
		for _, r := range got {
			// A watch on the reserved prefix may be refused or narrowed to
			// nothing; either way no reserved event may come (below).
			for _, ev := range r.Events {
				if heReserved(string(ev.Kv.Key)) || ev.PrevKv != nil && heReserved(string(ev.PrevKv.Key)) {
					t.Errorf("watch %d delivered a reserved event on %q", r.WatchId, ev.Kv.Key)
				}
			}
		}
	})

	t.Run("locks and elections", func(t *testing.T) {
		for _, c := range callers {
			lk := v3lockpb.NewLockClient(c.conn)
			el := v3electionpb.NewElectionClient(c.conn)
			own := adminLease
			if c.name == "web" {
				own = webLease
			}
			for _, n := range []string{"/_storegate/leases", "/_storegate", "/_storegate/", "/_storegate/x"} {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: []byte(n), Lease: own})
				cancel()
				heDenied(t, fmt.Sprintf("%s locks %q", c.name, n), err)
				ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
				_, err = el.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte(n), Lease: own, Value: []byte("x")})
				cancel()
				heDenied(t, fmt.Sprintf("%s campaigns in %q", c.name, n), err)
				resp, err := el.Leader(heCtx(t), &v3electionpb.LeaderRequest{Name: []byte(n)})
				heDenied(t, fmt.Sprintf("%s asks the leader of %q", c.name, n), err)
				if resp != nil {
					heNoLeak(t, "leader of "+n, ids, resp.String())
				}
				ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
				obs, err := el.Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte(n)})
				if err == nil {
					var m *v3electionpb.LeaderResponse
					m, err = obs.Recv()
					if m != nil {
						heNoLeak(t, "observe "+n, ids, m.String())
					}
				}
				cancel()
				heDenied(t, fmt.Sprintf("%s observes %q", c.name, n), err)
				_, err = el.Proclaim(heCtx(t), &v3electionpb.ProclaimRequest{Leader: &v3electionpb.LeaderKey{Name: []byte("/_storegate/leases"), Key: []byte(records[1]), Lease: webLease}, Value: []byte(ids[0])})
				heDenied(t, c.name+" proclaims onto a record", err)
				_, err = el.Resign(heCtx(t), &v3electionpb.ResignRequest{Leader: &v3electionpb.LeaderKey{Name: []byte("/_storegate/leases"), Key: []byte(records[1]), Lease: webLease}})
				heDenied(t, c.name+" resigns a record", err)
			}
			for _, k := range records {
				_, err := lk.Unlock(heCtx(t), &v3lockpb.UnlockRequest{Key: []byte(k)})
				heDenied(t, fmt.Sprintf("%s unlocks %q", c.name, k), err)
			}
			intact(t, c.name+" locks and elections")
		}
		for k := range e.all(t) {
			if heReserved(k) && !strings.HasPrefix(k, "/_storegate/leases/") && !strings.HasPrefix(k, fleetPrefix) { // only the gateway's records
				t.Errorf("%q appeared under the reserved prefix", k)
			}
		}
	})
}
