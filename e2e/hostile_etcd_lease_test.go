package e2e

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
)

// heKeepAlive sends one keep-alive for id on a fresh stream of conn and
// returns the TTL answered (-1 when the stream failed).
func heKeepAlive(t *testing.T, conn *grpc.ClientConn, id int64) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
	if err != nil {
		return -1
	}
	if err := s.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
		return -1
	}
	r, err := s.Recv()
	if err != nil {
		return -1
	}
	if r.ID != id {
		t.Errorf("keep-alive of %x answered for %x", id, r.ID)
	}
	return r.TTL
}

// TestHostileEtcdLeaseIdentity: class 4, identity of things. A lease
// belongs to whoever granted it through the gateway: web cannot keep
// alive, revoke, read, attach keys to, lock or campaign with admin's lease,
// one granted directly in etcd, or lease 0; LeaseLeases lists only its own;
// admin (owners: ["**"]) may manage web's.
func TestHostileEtcdLeaseIdentity(t *testing.T) {
	e := newHeEnv(t, "")
	const ttl = 60
	type foreignLease struct {
		name string
		id   int64
	}
	// fresh grants, for one subtest (an attack that works must not spoil
	// the next), a lease of admin's with a key on it, a lease granted in
	// etcd directly with a key on it, and names IDs that exist nowhere.
	fresh := func(t *testing.T) (adminLease, directLease int64, foreign []foreignLease) {
		t.Helper()
		adminLease = heGrant(t, e.admin, ttl)
		if _, err := pb.NewKVClient(e.admin).Put(heCtx(t), &pb.PutRequest{Key: []byte("/app/adm-on-lease"), Value: []byte("a"), Lease: adminLease}); err != nil {
			t.Fatalf("admin puts on its own lease: %v", err)
		}
		dl, err := e.direct.Grant(heCtx(t), ttl)
		if err != nil {
			t.Fatal(err)
		}
		directLease = int64(dl.ID)
		e.put(t, "/app/direct-on-lease", "d", clientv3.WithLease(dl.ID))
		if owner := e.get(t, heOwnerKey(adminLease)); owner == nil || string(owner.Value) != "spiffe://example.org/admin" || owner.Lease != adminLease {
			t.Fatalf("admin's lease owner record in etcd: %v", owner)
		}
		foreign = []foreignLease{{"admin's", adminLease}, {"direct", directLease}, {"missing", 0x7a11ce0ff1ce},
			{"admin's+1", adminLease + 1}, {"-1", -1}, {"max", math.MaxInt64}}
		return adminLease, directLease, foreign
	}
	webLease := heGrant(t, e.web, ttl)
	webLease2 := heGrant(t, e.web, ttl)
	if owner := e.get(t, heOwnerKey(webLease)); owner == nil || string(owner.Value) != "spiffe://example.org/web" {
		t.Fatalf("web's lease owner record in etcd: %v", owner)
	}
	lease := pb.NewLeaseClient(e.web)

	t.Run("revoke", func(t *testing.T) {
		adminLease, directLease, foreign := fresh(t)
		var errs []string
		for _, f := range foreign {
			var tr heTrailer
			_, err := lease.LeaseRevoke(heCtx(t), &pb.LeaseRevokeRequest{ID: f.id}, tr.opt())
			heDenied(t, "revoke "+f.name, err)
			errs = append(errs, fmt.Sprint(err))
			heNoLeak(t, "revoke "+f.name+" trailer", []string{"spiffe://example.org/admin", "/app/adm-on-lease", "/app/direct-on-lease"}, tr.reason())
		}
		// Existing and missing leases look alike.
		for _, s := range errs[1:] {
			if s != errs[0] {
				t.Errorf("revoke answers differ between leases: %q vs %q", errs[0], s)
			}
		}
		for _, id := range []int64{adminLease, directLease} {
			if left, _, keys := e.ttl(t, id); left <= 0 || len(keys) == 0 {
				t.Errorf("lease %x after web's revoke: ttl %d keys %q", id, left, keys)
			}
		}
	})

	t.Run("timetolive", func(t *testing.T) {
		_, _, foreign := fresh(t)
		for _, f := range foreign {
			for _, keys := range []bool{false, true} {
				resp, err := lease.LeaseTimeToLive(heCtx(t), &pb.LeaseTimeToLiveRequest{ID: f.id, Keys: keys})
				heDenied(t, fmt.Sprintf("timetolive %s keys=%v", f.name, keys), err)
				if resp != nil {
					heNoLeak(t, "timetolive "+f.name, []string{"/app/adm-on-lease", "/app/direct-on-lease", "/_storegate/"}, resp.String())
				}
			}
		}
		r, err := lease.LeaseTimeToLive(heCtx(t), &pb.LeaseTimeToLiveRequest{ID: webLease, Keys: true})
		if err != nil || r.TTL <= 0 {
			t.Errorf("web's own timetolive: %v %v", r, err)
		}
	})

	t.Run("attach", func(t *testing.T) {
		_, _, foreign := fresh(t)
		kv := pb.NewKVClient(e.web)
		for _, f := range foreign {
			k := "/app/web-on-" + strings.ReplaceAll(f.name, "'", "")
			_, err := kv.Put(heCtx(t), &pb.PutRequest{Key: []byte(k), Value: []byte("w"), Lease: f.id})
			heDenied(t, "put on "+f.name+" lease", err)
			_, err = kv.Txn(heCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{heOpTxn(&pb.TxnRequest{Success: []*pb.RequestOp{heOpPut(k, "w", f.id)}})}})
			heDenied(t, "txn put on "+f.name+" lease", err)
			if got := e.get(t, k); got != nil {
				t.Errorf("%q written in etcd (lease %x)", k, got.Lease)
			}
		}
		if _, err := kv.Put(heCtx(t), &pb.PutRequest{Key: []byte("/app/web-on-own"), Value: []byte("w"), Lease: webLease}); err != nil {
			t.Errorf("put on web's own lease: %v", err)
		}
	})

	t.Run("lock and campaign", func(t *testing.T) {
		_, _, foreign := fresh(t)
		lk := v3lockpb.NewLockClient(e.web)
		el := v3electionpb.NewElectionClient(e.web)
		for i, f := range append(foreign, foreignLease{"0 (etcd grants one nobody owns)", 0}) {
			// A name per attempt, so that an attempt wrongly allowed does not
			// make the next one wait for its lock.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: fmt.Appendf(nil, "/app/locks/hl%d", i), Lease: f.id})
			cancel()
			heDenied(t, "lock with "+f.name+" lease", err)
			ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
			_, err = el.Campaign(ctx, &v3electionpb.CampaignRequest{Name: fmt.Appendf(nil, "/app/election/he%d", i), Lease: f.id, Value: []byte("w")})
			cancel()
			heDenied(t, "campaign with "+f.name+" lease", err)
		}
		r, err := e.direct.Get(heCtx(t), "/app/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range r.Kvs {
			k := string(kv.Key)
			if strings.HasPrefix(k, "/app/locks/hl") || strings.HasPrefix(k, "/app/election/he") {
				t.Errorf("denied lock/campaign left %q (lease %x) in etcd", k, kv.Lease)
			}
		}
	})

	t.Run("chosen IDs", func(t *testing.T) {
		adminLease, directLease, _ := fresh(t)
		// Granting an ID that exists fails and records nothing.
		for _, id := range []int64{adminLease, directLease} {
			r, err := lease.LeaseGrant(heCtx(t), &pb.LeaseGrantRequest{ID: id, TTL: ttl})
			if err == nil && r.Error == "" {
				t.Errorf("web granted existing lease %x", id)
			}
		}
		if owner := e.get(t, heOwnerKey(directLease)); owner != nil {
			t.Errorf("direct lease got an owner record: %q", owner.Value)
		}
		if owner := e.get(t, heOwnerKey(adminLease)); owner == nil || string(owner.Value) != "spiffe://example.org/admin" {
			t.Errorf("admin's owner record after web's grant of its ID: %v", owner)
		}
		// Forging an owner record is a write under the reserved prefix.
		for _, c := range []struct {
			who  string
			conn *grpc.ClientConn
		}{{"web", e.web}, {"admin", e.admin}} {
			_, err := pb.NewKVClient(c.conn).Put(heCtx(t), &pb.PutRequest{Key: []byte(heOwnerKey(directLease)), Value: []byte("spiffe://example.org/web"), Lease: directLease})
			heDenied(t, c.who+" forges an owner record", err)
		}
		if owner := e.get(t, heOwnerKey(directLease)); owner != nil {
			t.Errorf("forged owner record in etcd: %q", owner.Value)
		}
		// Race: web grants an ID while etcd is asked for the same ID
		// directly; whoever loses, the record never names web for a lease
		// web did not get.
		for i := range 20 {
			id := int64(0x5eed0000 + i)
			var wg sync.WaitGroup
			var webErr error
			wg.Add(2)
			go func() {
				defer wg.Done()
				r, err := lease.LeaseGrant(heCtx(t), &pb.LeaseGrantRequest{ID: id, TTL: ttl})
				if err == nil && r.Error != "" {
					err = fmt.Errorf("%s", r.Error)
				}
				webErr = err
			}()
			go func() {
				defer wg.Done()
				_, _ = e.direct.Lease.Grant(heCtx(t), ttl) // a random ID, to load etcd
				_, _ = e.direct.Do(heCtx(t), clientv3.OpPut("/x/load", "x"))
				_, _ = pb.NewLeaseClient(e.direct.ActiveConnection()).LeaseGrant(heCtx(t), &pb.LeaseGrantRequest{ID: id, TTL: ttl})
			}()
			wg.Wait()
			owner := e.get(t, heOwnerKey(id))
			switch {
			case webErr == nil && (owner == nil || string(owner.Value) != "spiffe://example.org/web"):
				t.Errorf("race %d: web's grant of %x succeeded but the record is %v", i, id, owner)
			case webErr != nil && owner != nil:
				t.Errorf("race %d: web's grant of %x failed (%v) but a record names %q", i, id, webErr, owner.Value)
			}
			if webErr != nil {
				if got := heKeepAlive(t, e.web, id); got > 0 {
					t.Errorf("race %d: web keeps alive the lease %x it lost: ttl %d", i, id, got)
				}
			}
		}
	})

	t.Run("leases list", func(t *testing.T) {
		adminLease, directLease, _ := fresh(t)
		r, err := lease.LeaseLeases(heCtx(t), &pb.LeaseLeasesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		direct, err := e.direct.Leases(heCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		var all []int64
		for _, l := range direct.Leases {
			all = append(all, int64(l.ID))
		}
		// web's own: those whose record names web, read directly.
		var mine []int64
		for _, id := range all {
			if o := e.get(t, heOwnerKey(id)); o != nil && string(o.Value) == "spiffe://example.org/web" {
				mine = append(mine, id)
			}
		}
		var got []int64
		for _, l := range r.Leases {
			got = append(got, l.ID)
		}
		slices.Sort(got)
		slices.Sort(mine)
		if !slices.Equal(got, mine) {
			t.Errorf("web's lease list %x, want exactly web's own %x (etcd has %x)", got, mine, all)
		}
		if !slices.Contains(mine, webLease) || slices.Contains(got, adminLease) || slices.Contains(got, directLease) {
			t.Errorf("web's list %x (own %x, admin %x, direct %x)", got, webLease, adminLease, directLease)
		}
	})

	t.Run("keepalive", func(t *testing.T) {
		adminLease, directLease, _ := fresh(t)
		missing := int64(0x7a11ce0ff1ce)
		granted := time.Now()
		// Let the leases age, so that an extension would show.
		heEventually(t, 10*time.Second, "leases age", func() bool {
			l, _, _ := e.ttl(t, adminLease)
			return l <= ttl-2
		})
		before := map[int64]int64{}
		for _, id := range []int64{adminLease, directLease} {
			before[id], _, _ = e.ttl(t, id)
		}
		// Under load: several streams, many keep-alives of foreign leases
		// interleaved with web's own, for at most a few seconds.
		var wg sync.WaitGroup
		var mu sync.Mutex
		var bad []string
		deadline := time.Now().Add(4 * time.Second)
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				s, err := pb.NewLeaseClient(e.web).LeaseKeepAlive(ctx)
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					return
				}
				ids := []int64{adminLease, webLease, directLease, missing, 0, -1}
				for i := 0; i < 60 && time.Now().Before(deadline); i++ {
					id := ids[(i+g)%len(ids)]
					if err := s.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
						mu.Lock()
						bad = append(bad, err.Error())
						mu.Unlock()
						return
					}
					r, err := s.Recv()
					if err != nil {
						mu.Lock()
						bad = append(bad, err.Error())
						mu.Unlock()
						return
					}
					if r.ID == webLease && r.TTL <= 0 || r.ID != webLease && r.TTL != 0 {
						mu.Lock()
						bad = append(bad, fmt.Sprintf("keep-alive of %x: ttl %d", r.ID, r.TTL))
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		seen := map[string]int{}
		for _, b := range bad {
			seen[b]++
		}
		for b, n := range seen {
			t.Errorf("%s (%d times)", b, n)
		}
		for id, b := range before {
			if after, _, _ := e.ttl(t, id); after > b {
				t.Errorf("lease %x extended in etcd by web's keep-alives: ttl %d -> %d", id, b, after)
			}
		}
		t.Logf("leases aged %v", time.Since(granted).Round(time.Second))
	})

	t.Run("admin manages web's lease", func(t *testing.T) {
		al := pb.NewLeaseClient(e.admin)
		r, err := al.LeaseTimeToLive(heCtx(t), &pb.LeaseTimeToLiveRequest{ID: webLease, Keys: true})
		if err != nil || r.TTL <= 0 {
			t.Errorf("admin reads web's lease: %v %v", r, err)
		}
		if got := heKeepAlive(t, e.admin, webLease); got <= 0 {
			t.Errorf("admin keeps web's lease alive: ttl %d", got)
		} else if left, _, _ := e.ttl(t, webLease); left < ttl-1 {
			t.Errorf("admin's keep-alive did not extend web's lease in etcd: ttl %d", left)
		}
		list, err := al.LeaseLeases(heCtx(t), &pb.LeaseLeasesRequest{})
		if err != nil {
			t.Errorf("admin lists leases: %v", err)
		} else if !slices.ContainsFunc(list.Leases, func(l *pb.LeaseStatus) bool { return l.ID == webLease }) {
			t.Errorf("admin's lease list lacks web's lease %x", webLease)
		}
		if _, err := al.LeaseRevoke(heCtx(t), &pb.LeaseRevokeRequest{ID: webLease2}); err != nil {
			t.Errorf("admin revokes web's lease: %v", err)
		}
		if left, _, _ := e.ttl(t, webLease2); left != -1 {
			t.Errorf("web's lease %x still in etcd after admin's revoke: ttl %d", webLease2, left)
		}
	})
}
