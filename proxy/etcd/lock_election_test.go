package etcd

import (
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc/status"
)

// TestLock: the v3lock service, allowed and denied names.
func TestLock(t *testing.T) {
	e := newEnv(t, envConfig{})
	lease := e.grant(t, 600)
	web := v3lockpb.NewLockClient(e.conn(t, "web"))
	nobody := v3lockpb.NewLockClient(e.conn(t, "nobody"))

	t.Run("allowed", func(t *testing.T) {
		r, err := web.Lock(testCtx(t), &v3lockpb.LockRequest{Name: []byte("/app/locks/l1"), Lease: int64(lease)})
		mustOK(t, err)
		key := string(r.Key)
		if !strings.HasPrefix(key, "/app/locks/l1/") {
			t.Fatalf("lock key %q", key)
		}
		wantKeys(t, "lock keys", e.keys(t, "/app/locks/l1/"), []string{key})
		_, err = web.Unlock(testCtx(t), &v3lockpb.UnlockRequest{Key: r.Key})
		mustOK(t, err)
		wantKeys(t, "lock keys after unlock", e.keys(t, "/app/locks/l1/"), []string{})
	})
	tests := []struct {
		name string
		c    v3lockpb.LockClient
		lock string
	}{
		{"name outside", web, "/other/l"},
		{"forbidden name", web, "/app/secret/l"},
		{"caller without lock rights", nobody, "/app/locks/l2"},
	}
	for _, tt := range tests {
		t.Run("lock "+tt.name, func(t *testing.T) {
			_, err := tt.c.Lock(testCtx(t), &v3lockpb.LockRequest{Name: []byte(tt.lock), Lease: int64(lease)})
			wantDenied(t, err)
			wantKeys(t, "lock keys", e.keys(t, tt.lock), []string{})
		})
	}
	t.Run("unlock denied", func(t *testing.T) {
		// Someone else's lock.
		key := "/other/l/" + hexID(uint64(lease))
		e.put(t, key, "")
		_, err := web.Unlock(testCtx(t), &v3lockpb.UnlockRequest{Key: []byte(key)})
		wantDenied(t, err)
		if _, ok := e.value(t, key); !ok {
			t.Fatal("a denied unlock deleted the lock key")
		}
		_, err = nobody.Unlock(testCtx(t), &v3lockpb.UnlockRequest{Key: []byte("/app/locks/l1/" + hexID(uint64(lease)))})
		wantDenied(t, err)
	})
}

// TestLockReleasable: whoever may take a lock may release it. etcd's lock
// keys are NAME/<lease hex>; with an intention naming the locks one
// segment deep ("/app/locks/*") a caller must not be able to acquire
// "/app/locks/l" and then be refused the release of "/app/locks/l/<hex>".
func TestLockReleasable(t *testing.T) {
	e := newEnv(t, envConfig{intentions: `intentions:
  - name: web-locks
    source: "spiffe://example.org/web"
    resources: [lock]
    actions: [acquire, release]
    keys: ["/app/locks/*"]
    effect: allow
  - name: web-leases
    source: "spiffe://example.org/web"
    resources: [lease]
    actions: ["*"]
    effect: allow
`})
	lease := e.grant(t, 600)
	web := v3lockpb.NewLockClient(e.conn(t, "web"))
	r, err := web.Lock(testCtx(t), &v3lockpb.LockRequest{Name: []byte("/app/locks/l"), Lease: int64(lease)})
	if err != nil {
		wantDenied(t, err) // refusing the lock up front is consistent too
		return
	}
	_, err = web.Unlock(testCtx(t), &v3lockpb.UnlockRequest{Key: r.Key})
	if err != nil {
		t.Fatalf("lock /app/locks/l was granted (key %q) but its release is refused: %v", r.Key, err)
	}
}

// TestUnlockNeedsTheLease: two callers with the same lock rights; one may
// not release the other's held lock (its key is on the other's lease), nor
// a key that does not exist in a way that tells it apart from another's;
// the holder's own release works. Checked in etcd directly.
func TestUnlockNeedsTheLease(t *testing.T) {
	e := newEnv(t, envConfig{intentions: `intentions:
  - name: web-locks
    source: "spiffe://example.org/web"
    resources: [lock]
    actions: ["*"]
    keys: ["/app/locks/**"]
    effect: allow
  - name: mallory-locks
    source: "spiffe://example.org/mallory"
    resources: [lock]
    actions: ["*"]
    keys: ["/app/locks/**"]
    effect: allow
  - name: leases
    source: "spiffe://example.org/*"
    resources: [lease]
    actions: ["*"]
    effect: allow
`})
	lease := e.grant(t, 600) // web's
	web := v3lockpb.NewLockClient(e.conn(t, "web"))
	mallory := v3lockpb.NewLockClient(e.conn(t, "mallory"))
	r, err := web.Lock(testCtx(t), &v3lockpb.LockRequest{Name: []byte("/app/locks/l"), Lease: int64(lease)})
	mustOK(t, err)
	_, err = mallory.Unlock(testCtx(t), &v3lockpb.UnlockRequest{Key: r.Key})
	wantDenied(t, err)
	if _, ok := e.value(t, string(r.Key)); !ok {
		t.Fatal("another caller's unlock released web's lock")
	}
	_, errMissing := mallory.Unlock(testCtx(t), &v3lockpb.UnlockRequest{Key: []byte("/app/locks/l/feed")})
	wantDenied(t, errMissing)
	if status.Convert(errMissing).Message() != status.Convert(err).Message() {
		t.Errorf("unlock of a missing key says %q, of another's %q", errMissing, err)
	}
	_, err = web.Unlock(testCtx(t), &v3lockpb.UnlockRequest{Key: r.Key})
	mustOK(t, err)
	wantKeys(t, "lock keys after the holder's unlock", e.keys(t, "/app/locks/l/"), []string{})
}

// TestElection: the v3election service, allowed and denied names.
func TestElection(t *testing.T) {
	e := newEnv(t, envConfig{})
	lease := e.grant(t, 600)
	web := v3electionpb.NewElectionClient(e.conn(t, "web"))
	nobody := v3electionpb.NewElectionClient(e.conn(t, "nobody"))
	const name = "/app/election/e1"

	t.Run("allowed", func(t *testing.T) {
		ctx := testCtx(t)
		c, err := web.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte(name), Lease: int64(lease), Value: []byte("p1")})
		mustOK(t, err)
		leader := c.Leader
		if !strings.HasPrefix(string(leader.Key), name+"/") {
			t.Fatalf("leader key %q", leader.Key)
		}
		l, err := web.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte(name)})
		mustOK(t, err)
		if string(l.Kv.Value) != "p1" {
			t.Fatalf("leader value %q", l.Kv.Value)
		}
		obs, err := web.Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte(name)})
		mustOK(t, err)
		o, err := obs.Recv()
		mustOK(t, err)
		if string(o.Kv.Value) != "p1" {
			t.Fatalf("observed %q", o.Kv.Value)
		}
		_, err = web.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: leader, Value: []byte("p2")})
		mustOK(t, err)
		o, err = obs.Recv()
		mustOK(t, err)
		if string(o.Kv.Value) != "p2" {
			t.Fatalf("observed after proclaim %q", o.Kv.Value)
		}
		_, err = web.Resign(ctx, &v3electionpb.ResignRequest{Leader: leader})
		mustOK(t, err)
		wantKeys(t, "election keys after resign", e.keys(t, name+"/"), []string{})
	})

	// Someone else's election, outside web's names.
	other := "/other/e"
	key := other + "/" + hexID(uint64(lease))
	rev := e.put(t, key, "theirs").Header.Revision
	otherLeader := &v3electionpb.LeaderKey{Name: []byte(other), Key: []byte(key), Rev: rev, Lease: int64(lease)}
	tests := []struct {
		name string
		do   func() error
	}{
		{"campaign outside", func() error {
			_, err := web.Campaign(testCtx(t), &v3electionpb.CampaignRequest{Name: []byte(other), Lease: int64(lease), Value: []byte("x")})
			return err
		}},
		{"campaign forbidden name", func() error {
			_, err := web.Campaign(testCtx(t), &v3electionpb.CampaignRequest{Name: []byte("/app/secret/e"), Lease: int64(lease)})
			return err
		}},
		{"leader outside", func() error {
			_, err := web.Leader(testCtx(t), &v3electionpb.LeaderRequest{Name: []byte(other)})
			return err
		}},
		{"observe outside", func() error {
			s, err := web.Observe(testCtx(t), &v3electionpb.LeaderRequest{Name: []byte(other)})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"proclaim outside", func() error {
			_, err := web.Proclaim(testCtx(t), &v3electionpb.ProclaimRequest{Leader: otherLeader, Value: []byte("pwned")})
			return err
		}},
		{"resign outside", func() error {
			_, err := web.Resign(testCtx(t), &v3electionpb.ResignRequest{Leader: otherLeader})
			return err
		}},
		{"leader by nobody", func() error {
			_, err := nobody.Leader(testCtx(t), &v3electionpb.LeaderRequest{Name: []byte(name)})
			return err
		}},
		{"campaign by nobody", func() error {
			_, err := nobody.Campaign(testCtx(t), &v3electionpb.CampaignRequest{Name: []byte(name), Lease: int64(lease)})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantDenied(t, tt.do())
			if v, ok := e.value(t, key); !ok || v != "theirs" {
				t.Fatalf("%s = %q (exists %v) after a denied call", key, v, ok)
			}
			wantKeys(t, "web's election keys", e.keys(t, name+"/"), []string{})
			wantKeys(t, "forbidden election keys", e.keys(t, "/app/secret/e"), []string{})
		})
	}
}

// TestElectionLeaderKeyOutsideName: Proclaim and Resign act on
// leader.key (etcd's election server resumes the election on it and puts
// to, or deletes, that key), not on leader.name. A caller allowed one
// election must not reach any other key by naming its election and
// someone else's key.
func TestElectionLeaderKeyOutsideName(t *testing.T) {
	e := newEnv(t, envConfig{})
	lease := e.grant(t, 600)
	web := v3electionpb.NewElectionClient(e.conn(t, "web"))
	const target = "/app/secret/target"
	forged := func() *v3electionpb.LeaderKey {
		e.put(t, target, "orig")
		g, err := e.direct.Get(testCtx(t), target)
		mustOK(t, err)
		return &v3electionpb.LeaderKey{
			Name: []byte("/app/election/e1"), Key: []byte(target),
			Rev: g.Kvs[0].CreateRevision, Lease: int64(lease),
		}
	}
	t.Run("proclaim", func(t *testing.T) {
		_, err := web.Proclaim(testCtx(t), &v3electionpb.ProclaimRequest{Leader: forged(), Value: []byte("pwned")})
		v, _ := e.value(t, target)
		if err == nil || v != "orig" {
			t.Fatalf("proclaim with a forged leader key: err %v, %s = %q", err, target, v)
		}
		wantDenied(t, err)
	})
	t.Run("resign", func(t *testing.T) {
		_, err := web.Resign(testCtx(t), &v3electionpb.ResignRequest{Leader: forged()})
		_, exists := e.value(t, target)
		if err == nil || !exists {
			t.Fatalf("resign with a forged leader key: err %v, %s exists %v", err, target, exists)
		}
		wantDenied(t, err)
	})
}

// TestLockElectionForeignLease: Lock and Campaign put NAME/<lease hex>
// with the caller's lease attached, so etcd's rule for Put applies
// (PROTOCOLS.md, "Fields to authorize"): attaching a key to a lease needs
// write access to every key already on it. A lease holding a key the
// caller may not write must be refused, as a Put with it is.
func TestLockElectionForeignLease(t *testing.T) {
	e := newEnv(t, envConfig{})
	foreign := e.grant(t, 600)
	e.put(t, "/app/secret/held", "s", clientv3.WithLease(foreign))
	conn := e.conn(t, "web")

	_, err := pb.NewKVClient(conn).Put(testCtx(t), &pb.PutRequest{Key: []byte("/app/p"), Value: []byte("x"), Lease: int64(foreign)})
	wantDenied(t, err) // the rule, as Put applies it

	t.Run("lock", func(t *testing.T) {
		_, err := v3lockpb.NewLockClient(conn).Lock(testCtx(t), &v3lockpb.LockRequest{Name: []byte("/app/locks/f"), Lease: int64(foreign)})
		wantDenied(t, err)
		wantKeys(t, "lock keys", e.keys(t, "/app/locks/f/"), []string{})
	})
	t.Run("campaign", func(t *testing.T) {
		_, err := v3electionpb.NewElectionClient(conn).Campaign(testCtx(t),
			&v3electionpb.CampaignRequest{Name: []byte("/app/election/f"), Lease: int64(foreign), Value: []byte("x")})
		wantDenied(t, err)
		wantKeys(t, "election keys", e.keys(t, "/app/election/f/"), []string{})
	})
}
