package etcd

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fleetTTL is the registry lease of these tests: etcd's minimum.
const fleetTTL = 2 * time.Second

// memberURLs is the client URLs MemberList answers through the front.
func memberURLs(t *testing.T, e *env) []string {
	t.Helper()
	r, err := pb.NewClusterClient(e.conn(t, "web")).MemberList(testCtx(t), &pb.MemberListRequest{Linearizable: true})
	mustOK(t, err)
	var urls []string
	for _, m := range r.Members {
		urls = append(urls, m.ClientURLs...)
	}
	slices.Sort(urls)
	return urls
}

// fleetRecords reads the fleet records directly in etcd: key → URLs.
func fleetRecords(t *testing.T, e *env) map[string][]string {
	t.Helper()
	r, err := e.direct.Get(testCtx(t), fleetPrefix, clientv3.WithPrefix())
	mustOK(t, err)
	out := map[string][]string{}
	for _, kv := range r.Kvs {
		var rec fleetRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			t.Fatalf("record %s: %v", kv.Key, err)
		}
		if kv.Lease == 0 {
			t.Fatalf("record %s has no lease", kv.Key)
		}
		out[string(kv.Key)] = rec.URLs
	}
	return out
}

// TestFleetRegistry: a replica registers its advertised URLs on a lease of
// the fleet TTL; MemberList lists every live replica (here this one and a
// second registry on the same etcd), drops one that deregisters at once
// (its lease revoked in etcd), and one that dies (no revoke) within its
// TTL plus 3s (etcd revokes expired leases on a 500ms tick; the machine is
// shared).
func TestFleetRegistry(t *testing.T) {
	self := "https://gw1.example:23790"
	e := newEnv(t, envConfig{opts: Options{AdvertiseURLs: []string{self}, FleetTTL: fleetTTL}})
	t.Cleanup(func() { _ = e.srv.Deregister(context.Background()) })

	// This replica's own URL is listed at once, record seen or not.
	if got := memberURLs(t, e); !slices.Equal(got, []string{self}) {
		t.Fatalf("member URLs %q, want %q", got, self)
	}
	waitFor(t, "this replica's record", func() bool {
		for _, urls := range fleetRecords(t, e) {
			if slices.Equal(urls, []string{self}) {
				return true
			}
		}
		return false
	})
	for k := range fleetRecords(t, e) {
		r, err := e.direct.Get(testCtx(t), k)
		mustOK(t, err)
		ttl, err := e.direct.TimeToLive(testCtx(t), clientv3.LeaseID(r.Kvs[0].Lease))
		mustOK(t, err)
		if ttl.GrantedTTL != int64(fleetTTL/time.Second) {
			t.Fatalf("record lease granted with TTL %d, want %d", ttl.GrantedTTL, fleetTTL/time.Second)
		}
	}

	other := "https://gw2.example:23790"
	o := newFleet(e.up.client, []string{other}, fleetTTL, testLogger())
	waitFor(t, "the second replica in MemberList", func() bool {
		return slices.Equal(memberURLs(t, e), []string{self, other})
	})
	mustOK(t, o.stop(testCtx(t)))
	// Deregistered: gone from etcd at once, and from MemberList as soon as
	// the watch delivers the delete.
	if n := len(fleetRecords(t, e)); n != 1 {
		t.Fatalf("%d records after a deregistration, want 1", n)
	}
	waitFor(t, "the deregistered replica to leave MemberList", func() bool {
		return slices.Equal(memberURLs(t, e), []string{self})
	})

	// A replica that dies keeps its record until its lease expires.
	dead := "https://gw3.example:23790"
	d := newFleet(e.up.client, []string{dead}, fleetTTL, testLogger())
	waitFor(t, "the third replica in MemberList", func() bool {
		return slices.Equal(memberURLs(t, e), []string{self, dead})
	})
	d.cancel() // its loops end; nothing revokes the lease
	d.done.Wait()
	died := time.Now()
	waitFor(t, "the dead replica to leave MemberList", func() bool {
		return slices.Equal(memberURLs(t, e), []string{self})
	})
	if took := time.Since(died); took > fleetTTL+3*time.Second {
		t.Fatalf("the dead replica left MemberList after %v, over its TTL %v + 3s", took, fleetTTL)
	}

	// A deregistered replica leaves its own list too (it is stopping).
	mustOK(t, e.srv.Deregister(testCtx(t)))
	if n := len(fleetRecords(t, e)); n != 0 {
		t.Fatalf("%d records after this replica deregistered", n)
	}
	if got := memberURLs(t, e); !slices.Equal(got, []string{self}) {
		t.Fatalf("member URLs of a deregistered replica with no other %q, want its own", got)
	}
	waitNoFrontGoroutines(t, "(*fleet)")
}

// TestFleetReregisters: a replica whose lease is lost (revoked behind its
// back, as an expiry after a long etcd outage would) registers again on a
// new lease, and its MemberList keeps following the fleet.
func TestFleetReregisters(t *testing.T) {
	self := "https://gw1.example:23790"
	e := newEnv(t, envConfig{opts: Options{AdvertiseURLs: []string{self}, FleetTTL: fleetTTL}})
	t.Cleanup(func() { _ = e.srv.Deregister(context.Background()) })
	lease := func() int64 {
		for k := range fleetRecords(t, e) {
			r, err := e.direct.Get(testCtx(t), k)
			mustOK(t, err)
			return r.Kvs[0].Lease
		}
		return 0
	}
	waitFor(t, "the record", func() bool { return lease() != 0 })
	first := lease()
	_, err := e.direct.Revoke(testCtx(t), clientv3.LeaseID(first))
	mustOK(t, err)
	waitFor(t, "the record on a new lease", func() bool { l := lease(); return l != 0 && l != first })

	// The live set still follows: a new replica shows up.
	other := "https://gw2.example:23790"
	o := newFleet(e.up.client, []string{other}, fleetTTL, testLogger())
	t.Cleanup(func() { _ = o.stop(context.Background()) })
	waitFor(t, "the second replica in MemberList", func() bool {
		return slices.Equal(memberURLs(t, e), []string{self, other})
	})
}

// TestFleetReserved: callers, operators included, neither read (reads
// come back without them or are denied) nor write the fleet records: they
// are under the reserved prefix.
func TestFleetReserved(t *testing.T) {
	e := newEnv(t, envConfig{opts: Options{AdvertiseURLs: []string{"https://gw1.example:23790"}, FleetTTL: fleetTTL}})
	t.Cleanup(func() { _ = e.srv.Deregister(context.Background()) })
	kv := e.kv(t, "admin")
	waitFor(t, "the record", func() bool { return len(fleetRecords(t, e)) == 1 })
	r, err := kv.Range(testCtx(t), &pb.RangeRequest{Key: []byte(fleetPrefix), RangeEnd: []byte(fleetPrefix + "\xff")})
	if err == nil && len(r.Kvs) != 0 {
		t.Fatalf("a caller read the fleet records: %v", r.Kvs)
	}
	for k := range fleetRecords(t, e) {
		r, err := kv.Range(testCtx(t), &pb.RangeRequest{Key: []byte(k)})
		if err == nil && len(r.Kvs) != 0 {
			t.Fatalf("a caller read the fleet record %s", k)
		}
	}
	_, err = kv.Put(testCtx(t), &pb.PutRequest{Key: []byte(fleetPrefix + "forged"), Value: []byte(`{"urls":["https://evil.example:1"]}`)})
	wantDenied(t, err)
	if recs := fleetRecords(t, e); recs[fleetPrefix+"forged"] != nil {
		t.Fatal("a caller wrote a fleet record")
	}
}

// TestFleetDeal: the live replicas are dealt over the started voting
// members, each replica's URLs once when there are enough of them, every
// started member keeping some; unstarted members keep none, learners get
// one replica each; IDs and names are etcd's.
func TestFleetDeal(t *testing.T) {
	e := newEnv(t, envConfig{})
	members := func() []*pb.Member {
		return []*pb.Member{
			{ID: 1, Name: "m0", ClientURLs: []string{"https://etcd0"}},
			{ID: 2, Name: "m1", ClientURLs: []string{"https://etcd1"}},
			{ID: 3, Name: "m2", ClientURLs: []string{"https://etcd2"}},
			{ID: 4, Name: "", ClientURLs: nil},                                          // unstarted
			{ID: 5, Name: "l0", ClientURLs: []string{"https://etcd5"}, IsLearner: true}, // learner
		}
	}
	tests := []struct {
		name string
		reps [][]string
		want [][]string // per member
	}{
		{"one", [][]string{{"https://a"}},
			[][]string{{"https://a"}, {"https://a"}, {"https://a"}, nil, {"https://a"}}},
		{"two", [][]string{{"https://a"}, {"https://b"}},
			[][]string{{"https://a"}, {"https://b"}, {"https://a"}, nil, {"https://b"}}},
		{"three", [][]string{{"https://a"}, {"https://b"}, {"https://c"}},
			[][]string{{"https://a"}, {"https://b"}, {"https://c"}, nil, {"https://a"}}},
		{"five", [][]string{{"https://a", "https://a2"}, {"https://b"}, {"https://c"}, {"https://d"}, {"https://e"}},
			[][]string{{"https://a", "https://a2", "https://d"}, {"https://b", "https://e"}, {"https://c"}, nil, {"https://d"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := map[string][]string{}
			for i, r := range tt.reps {
				live[fleetPrefix+string(rune('a'+i))] = r
			}
			e.srv.fleet = &fleet{self: tt.reps[0], live: live}
			t.Cleanup(func() { e.srv.fleet = nil })
			ms := members()
			e.srv.advertise(testCtx(t), ms)
			for i, m := range ms {
				if !slices.Equal(m.ClientURLs, tt.want[i]) {
					t.Errorf("member %d (%s) client URLs %q, want %q", i, m.Name, m.ClientURLs, tt.want[i])
				}
				if m.ID != uint64(i+1) {
					t.Errorf("member %d ID %d", i, m.ID)
				}
			}
		})
	} // With nothing to advertise (no fleet, no AdvertiseURLs) no member
	// shows etcd's own client URLs: callers never learn a way around.
	t.Run("none", func(t *testing.T) {
		saved := e.srv.opts.AdvertiseURLs
		e.srv.opts.AdvertiseURLs = nil
		t.Cleanup(func() { e.srv.opts.AdvertiseURLs = saved })
		ms := members()
		e.srv.advertise(testCtx(t), ms)
		for i, m := range ms {
			if len(m.ClientURLs) != 0 {
				t.Errorf("member %d (%s) client URLs %q with nothing to advertise, want none", i, m.Name, m.ClientURLs)
			}
		}
	})
}
