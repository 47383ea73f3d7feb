package etcd

import (
	"context"
	"errors"
	"io"
	"sort"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
)

// TestLeaseAuthorization: grant, revoke, time-to-live and leases, allowed
// or denied; revoking needs delete access to every attached key.
func TestLeaseAuthorization(t *testing.T) {
	e := newEnv(t, envConfig{})
	web := pb.NewLeaseClient(e.conn(t, "web"))
	nobody := pb.NewLeaseClient(e.conn(t, "nobody"))

	mine := e.grant(t, 600)
	e.put(t, "/app/l/1", "1", clientv3.WithLease(mine))
	e.put(t, "/app/l/2", "2", clientv3.WithLease(mine))
	guarded := e.grant(t, 600)
	e.put(t, "/app/l/3", "3", clientv3.WithLease(guarded))
	e.put(t, "/app/secret/l", "s", clientv3.WithLease(guarded))
	mixed := e.grant(t, 600)
	e.put(t, "/app/m/1", "1", clientv3.WithLease(mixed))
	e.put(t, "/app/secret/m", "s", clientv3.WithLease(mixed))
	e.put(t, "/other/m", "o", clientv3.WithLease(mixed))
	bare := e.grant(t, 600)

	alive := func(t *testing.T, id clientv3.LeaseID) bool {
		t.Helper()
		r, err := e.direct.TimeToLive(testCtx(t), id)
		mustOK(t, err)
		return r.TTL > 0
	}

	t.Run("grant", func(t *testing.T) {
		r, err := web.LeaseGrant(testCtx(t), &pb.LeaseGrantRequest{TTL: 600})
		mustOK(t, err)
		if r.ID == 0 || r.TTL != 600 {
			t.Fatalf("grant: %v", r)
		}
		if !alive(t, clientv3.LeaseID(r.ID)) {
			t.Fatal("granted lease not alive in etcd")
		}
		_, err = nobody.LeaseGrant(testCtx(t), &pb.LeaseGrantRequest{TTL: 600, ID: 0x5e5e})
		wantDenied(t, err)
		if alive(t, 0x5e5e) {
			t.Fatal("a denied grant created the lease")
		}
	})
	t.Run("leases", func(t *testing.T) {
		r, err := web.LeaseLeases(testCtx(t), &pb.LeaseLeasesRequest{})
		mustOK(t, err)
		ids := map[int64]bool{}
		for _, l := range r.Leases {
			ids[l.ID] = true
		}
		for _, id := range []clientv3.LeaseID{mine, guarded, mixed, bare} {
			if !ids[int64(id)] {
				t.Fatalf("lease %x missing from %v", id, r.Leases)
			}
		}
		_, err = nobody.LeaseLeases(testCtx(t), &pb.LeaseLeasesRequest{})
		wantDenied(t, err)
	})
	t.Run("time to live", func(t *testing.T) {
		tests := []struct {
			name   string
			client pb.LeaseClient
			id     clientv3.LeaseID
			keys   bool
			want   []string
			denied bool
		}{
			{name: "keys filtered", client: web, id: mixed, keys: true, want: []string{"/app/m/1"}},
			{name: "keys all readable", client: web, id: mine, keys: true, want: []string{"/app/l/1", "/app/l/2"}},
			{name: "no keys asked", client: web, id: mixed, want: []string{}},
			{name: "admin sees every key", client: pb.NewLeaseClient(e.conn(t, "admin")), id: mixed, keys: true,
				want: []string{"/app/m/1", "/app/secret/m", "/other/m"}},
			{name: "denied", client: nobody, id: mine, keys: true, denied: true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, err := tt.client.LeaseTimeToLive(testCtx(t), &pb.LeaseTimeToLiveRequest{ID: int64(tt.id), Keys: tt.keys})
				if tt.denied {
					wantDenied(t, err)
					return
				}
				mustOK(t, err)
				if r.ID != int64(tt.id) || r.TTL <= 0 || r.GrantedTTL != 600 {
					t.Fatalf("ttl: %v", r)
				}
				got := []string{}
				for _, k := range r.Keys {
					got = append(got, string(k))
				}
				sort.Strings(got)
				wantKeys(t, "attached keys", got, tt.want)
			})
		}
		// client/v3 --keys, as etcdctl lease timetolive --keys.
		r, err := e.client(t, "web").TimeToLive(testCtx(t), mixed, clientv3.WithAttachedKeys())
		mustOK(t, err)
		if len(r.Keys) != 1 || string(r.Keys[0]) != "/app/m/1" {
			t.Fatalf("client/v3 keys: %q", r.Keys)
		}
	})
	t.Run("revoke", func(t *testing.T) {
		_, err := web.LeaseRevoke(testCtx(t), &pb.LeaseRevokeRequest{ID: int64(guarded)})
		wantDenied(t, err)
		if !alive(t, guarded) {
			t.Fatal("a denied revoke revoked the lease")
		}
		if _, ok := e.value(t, "/app/secret/l"); !ok {
			t.Fatal("a denied revoke deleted /app/secret/l")
		}
		if _, ok := e.value(t, "/app/l/3"); !ok {
			t.Fatal("a denied revoke deleted /app/l/3")
		}
		_, err = web.LeaseRevoke(testCtx(t), &pb.LeaseRevokeRequest{ID: int64(mixed)})
		wantDenied(t, err)
		_, err = nobody.LeaseRevoke(testCtx(t), &pb.LeaseRevokeRequest{ID: int64(bare)})
		wantDenied(t, err)
		if !alive(t, bare) {
			t.Fatal("a denied revoke revoked the bare lease")
		}

		_, err = web.LeaseRevoke(testCtx(t), &pb.LeaseRevokeRequest{ID: int64(mine)})
		mustOK(t, err)
		if alive(t, mine) {
			t.Fatal("revoked lease still alive")
		}
		wantKeys(t, "keys of the revoked lease", e.keys(t, "/app/l/"), []string{"/app/l/3"})
		_, err = web.LeaseRevoke(testCtx(t), &pb.LeaseRevokeRequest{ID: int64(bare)})
		mustOK(t, err)
		// A lease that does not exist is answered as another identity's
		// would be (no answer tells which leases exist); a caller whose
		// intention covers every owner's leases gets etcd's own error.
		_, err = web.LeaseRevoke(testCtx(t), &pb.LeaseRevokeRequest{ID: int64(bare)})
		wantDenied(t, err)
		_, err = pb.NewLeaseClient(e.conn(t, "admin")).LeaseRevoke(testCtx(t), &pb.LeaseRevokeRequest{ID: int64(bare)})
		wantStatus(t, err, codes.NotFound, "etcdserver: requested lease not found")
	})
}

// keepAlivePolicy allows everything but keep-alives of lease 2: the shipped
// intentions cannot tell one lease from another.
const keepAlivePolicy = `package storegate.authz

default allow := false

allow if not denied_keepalive

denied_keepalive if {
	input.op.resource == "lease"
	input.op.action == "keepalive"
	input.op.lease == 2
}
`

// TestLeaseKeepAlive: on one keep-alive stream a denied lease is answered
// TTL 0 (clients then drop it) while an allowed lease keeps being renewed.
func TestLeaseKeepAlive(t *testing.T) {
	e := newEnv(t, envConfig{rego: keepAlivePolicy})
	const allowedID, deniedID = 1, 2
	conn := e.conn(t, "web")
	lc := pb.NewLeaseClient(conn)
	// The denied lease expires soon once nothing renews it; the allowed
	// one is renewed every second by client/v3 (TTL/3).
	for id, ttl := range map[int64]int64{allowedID: 3, deniedID: 2} {
		_, err := lc.LeaseGrant(testCtx(t), &pb.LeaseGrantRequest{ID: id, TTL: ttl})
		mustOK(t, err)
	}

	t.Run("raw stream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		s, err := lc.LeaseKeepAlive(ctx)
		mustOK(t, err)
		for _, step := range []struct {
			id     int64
			denied bool
		}{{deniedID, true}, {allowedID, false}, {deniedID, true}, {allowedID, false}} {
			mustOK(t, s.Send(&pb.LeaseKeepAliveRequest{ID: step.id}))
			r, err := s.Recv()
			mustOK(t, err)
			switch {
			case r.ID != step.id:
				t.Fatalf("answer for lease %d, want %d", r.ID, step.id)
			case step.denied && r.TTL != 0:
				t.Fatalf("denied lease %d answered TTL %d, want 0", r.ID, r.TTL)
			case !step.denied && r.TTL <= 0:
				t.Fatalf("allowed lease %d answered TTL %d", r.ID, r.TTL)
			}
		}
		mustOK(t, s.CloseSend())
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseSend: %v, want EOF", err)
		}
		waitNoFrontGoroutines(t, "(*leaseServer).LeaseKeepAlive")
	})

	t.Run("client/v3", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		cli := e.client(t, "web")
		okCh, err := cli.KeepAlive(ctx, allowedID)
		mustOK(t, err)
		deniedCh, err := cli.KeepAlive(ctx, deniedID)
		mustOK(t, err)
		// The denied lease's channel closes: client/v3 reads TTL 0 as
		// "lease expired". Nothing renews it, so it really expires.
		for r := range deniedCh {
			t.Fatalf("renewal of the denied lease: %+v", r)
		}
		waitFor(t, "the denied lease to expire", func() bool {
			r, err := e.direct.TimeToLive(testCtx(t), deniedID)
			return err == nil && r.TTL == -1
		})
		// The allowed lease is renewed all along, well past its TTL.
		renewals := 0
		for renewals < 4 {
			r, ok := <-okCh
			if !ok {
				t.Fatal("keep-alive channel of the allowed lease closed")
			}
			if r.ID != allowedID || r.TTL <= 0 {
				t.Fatalf("renewal: %+v", r)
			}
			renewals++
		}
		r, err := e.direct.TimeToLive(testCtx(t), allowedID)
		mustOK(t, err)
		if r.TTL <= 0 {
			t.Fatalf("allowed lease expired: %+v", r)
		}
		cancel()
		for range okCh {
		}
	})
	waitNoFrontGoroutines(t, "(*leaseServer).LeaseKeepAlive")
}

// TestLeaseKeepAliveEndsWithUpstream: the keep-alive stream ends with an
// error when etcd goes away, and its goroutines with it.
func TestLeaseKeepAliveEndsWithUpstream(t *testing.T) {
	e := newEnv(t, envConfig{})
	lc := pb.NewLeaseClient(e.conn(t, "web"))
	g, err := lc.LeaseGrant(testCtx(t), &pb.LeaseGrantRequest{TTL: 60})
	mustOK(t, err)
	s, err := lc.LeaseKeepAlive(testCtx(t))
	mustOK(t, err)
	mustOK(t, s.Send(&pb.LeaseKeepAliveRequest{ID: g.ID}))
	if r, err := s.Recv(); err != nil || r.TTL <= 0 {
		t.Fatalf("keep-alive: %v %v", r, err)
	}
	e.stopEtcd()
	for {
		_, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatal("stream ended cleanly after the upstream died; want an error")
			}
			break
		}
	}
	waitNoFrontGoroutines(t, "(*leaseServer).LeaseKeepAlive")
}
