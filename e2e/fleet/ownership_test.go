package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// replicas is one client per gateway (pinned: no balancer) for a caller.
func (f *fleet) replicas(t *testing.T, who string) []*clientv3.Client {
	var cs []*clientv3.Client
	for i := range f.gws {
		cs = append(cs, f.client(t, who, f.gwEndpoint(i)))
	}
	return cs
}

// wantDenied checks that err is etcd's permission denied, exactly.
func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	raw := status.Code(err) == codes.PermissionDenied && status.Convert(err).Message() == rpctypes.ErrPermissionDenied.Error()
	if !raw && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("%s: %v, want %v", what, err, rpctypes.ErrPermissionDenied)
	}
}

// TestFleetOwnership proves ownership is kept in the stores, so every
// replica enforces it alike: a lease, a lock, an election and a Consul
// session taken through replica 0 are used by their owner through replica
// 1 (and 2), and refused to another caller with the same rights on every
// replica; etcd and Consul, read directly, show the outcome.
func TestFleetOwnership(t *testing.T) {
	f := startFleet(t)
	web, mallory := f.replicas(t, "web"), f.replicas(t, "mallory")
	direct := f.direct(t)

	t.Run("lease", func(t *testing.T) {
		g, err := web[0].Grant(ctx(t), 60)
		if err != nil {
			t.Fatal(err)
		}
		if ka, err := web[1].KeepAliveOnce(ctx(t), g.ID); err != nil || ka.TTL <= 0 {
			t.Fatalf("owner's keep-alive through replica 1: %v %v", ka, err)
		}
		for i, m := range mallory {
			if ka, err := m.KeepAliveOnce(ctx(t), g.ID); err == nil {
				t.Errorf("another caller kept web's lease alive through replica %d: ttl %d", i, ka.TTL)
			}
			_, err := m.Revoke(ctx(t), g.ID)
			wantDenied(t, "another caller's revoke through replica "+strconv.Itoa(i), err)
			_, err = m.Put(ctx(t), "/fleet/lease/mallory", "x", clientv3.WithLease(g.ID))
			wantDenied(t, "another caller's put on the lease through replica "+strconv.Itoa(i), err)
		}
		if ttl, err := direct.TimeToLive(ctx(t), g.ID); err != nil || ttl.TTL <= 0 {
			t.Fatalf("web's lease in etcd after the refusals: %v %v", ttl, err)
		}
		if r, err := direct.Get(ctx(t), "/fleet/lease/mallory"); err != nil || len(r.Kvs) != 0 {
			t.Fatalf("a refused put reached etcd: %v %v", r, err)
		}
		if _, err := web[1].Revoke(ctx(t), g.ID); err != nil {
			t.Fatalf("owner's revoke through replica 1: %v", err)
		}
		if ttl, err := direct.TimeToLive(ctx(t), g.ID); err != nil || ttl.TTL != -1 {
			t.Fatalf("web's lease in etcd after its revoke: %v %v", ttl, err)
		}
	})

	t.Run("lock", func(t *testing.T) {
		name := []byte("/fleet/locks/job")
		wl, err := web[0].Grant(ctx(t), 60)
		if err != nil {
			t.Fatal(err)
		}
		ml, err := mallory[1].Grant(ctx(t), 60)
		if err != nil {
			t.Fatal(err)
		}
		held, err := v3lockpb.NewLockClient(web[0].ActiveConnection()).Lock(ctx(t), &v3lockpb.LockRequest{Name: name, Lease: int64(wl.ID)})
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range mallory {
			lc := v3lockpb.NewLockClient(m.ActiveConnection())
			// Stealing: taking it under the holder's lease would return
			// at once (the key is already there).
			_, err := lc.Lock(ctx(t), &v3lockpb.LockRequest{Name: name, Lease: int64(wl.ID)})
			wantDenied(t, "another caller's lock under web's lease through replica "+strconv.Itoa(i), err)
			_, err = lc.Unlock(ctx(t), &v3lockpb.UnlockRequest{Key: held.Key})
			wantDenied(t, "another caller's unlock through replica "+strconv.Itoa(i), err)
		}
		// Waiting its turn under its own lease: it does not get the lock.
		wctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		_, err = v3lockpb.NewLockClient(mallory[2].ActiveConnection()).Lock(wctx, &v3lockpb.LockRequest{Name: name, Lease: int64(ml.ID)})
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("another caller's lock while web holds it: %v, want it to wait", err)
		}
		if first := firstKey(t, direct, string(name)+"/"); first != string(held.Key) {
			t.Fatalf("the lock's holder in etcd is %q, want web's %q", first, held.Key)
		}
		if _, err := v3lockpb.NewLockClient(web[1].ActiveConnection()).Unlock(ctx(t), &v3lockpb.UnlockRequest{Key: held.Key}); err != nil {
			t.Fatalf("owner's unlock through replica 1: %v", err)
		}
		if r, err := direct.Get(ctx(t), string(held.Key)); err != nil || len(r.Kvs) != 0 {
			t.Fatalf("web's lock key in etcd after its unlock: %v %v", r, err)
		}
		for _, id := range []clientv3.LeaseID{wl.ID} {
			_, _ = web[0].Revoke(ctx(t), id)
		}
		_, _ = mallory[1].Revoke(ctx(t), ml.ID)
	})

	t.Run("election", func(t *testing.T) {
		name := []byte("/fleet/elections/primary")
		wl, err := web[0].Grant(ctx(t), 60)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = web[0].Revoke(context.Background(), wl.ID) }()
		camp, err := v3electionpb.NewElectionClient(web[0].ActiveConnection()).Campaign(ctx(t),
			&v3electionpb.CampaignRequest{Name: name, Lease: int64(wl.ID), Value: []byte("web-1")})
		if err != nil {
			t.Fatal(err)
		}
		leader := camp.Leader
		for i, m := range mallory {
			ec := v3electionpb.NewElectionClient(m.ActiveConnection())
			_, err := ec.Proclaim(ctx(t), &v3electionpb.ProclaimRequest{Leader: leader, Value: []byte("mallory")})
			wantDenied(t, "another caller's proclaim through replica "+strconv.Itoa(i), err)
			_, err = ec.Resign(ctx(t), &v3electionpb.ResignRequest{Leader: leader})
			wantDenied(t, "another caller's resign through replica "+strconv.Itoa(i), err)
			_, err = ec.Campaign(ctx(t), &v3electionpb.CampaignRequest{Name: name, Lease: int64(wl.ID), Value: []byte("mallory")})
			wantDenied(t, "another caller's campaign under web's lease through replica "+strconv.Itoa(i), err)
		}
		if v := value(t, direct, string(leader.Key)); v != "web-1" {
			t.Fatalf("the leader's value in etcd after the refusals: %q", v)
		}
		web1 := v3electionpb.NewElectionClient(web[1].ActiveConnection())
		if _, err := web1.Proclaim(ctx(t), &v3electionpb.ProclaimRequest{Leader: leader, Value: []byte("web-2")}); err != nil {
			t.Fatalf("owner's proclaim through replica 1: %v", err)
		}
		if v := value(t, direct, string(leader.Key)); v != "web-2" {
			t.Fatalf("the leader's value in etcd after web's proclaim: %q", v)
		}
		if _, err := web1.Resign(ctx(t), &v3electionpb.ResignRequest{Leader: leader}); err != nil {
			t.Fatalf("owner's resign through replica 1: %v", err)
		}
		if r, err := direct.Get(ctx(t), string(leader.Key)); err != nil || len(r.Kvs) != 0 {
			t.Fatalf("the leader key in etcd after web resigned: %v %v", r, err)
		}
	})

	t.Run("consul session", func(t *testing.T) {
		w, m := f.https(t, "web"), f.https(t, "mallory")
		gw := func(i int) string { return "https://" + f.gws[i].Consul }
		code, body := call(t, w, "PUT", gw(0)+"/v1/session/create", `{"Name":"fleet","TTL":"30s"}`)
		if code != http.StatusOK {
			t.Fatalf("session create through replica 0: %d %s", code, body)
		}
		var created struct{ ID string }
		if err := json.Unmarshal([]byte(body), &created); err != nil || created.ID == "" {
			t.Fatalf("session create answer %q: %v", body, err)
		}
		sid := created.ID
		if code, body := call(t, w, "PUT", gw(1)+"/v1/session/renew/"+sid, ""); code != http.StatusOK || !strings.Contains(body, sid) {
			t.Fatalf("owner's renew through replica 1: %d %s", code, body)
		}
		for i := range f.gws {
			for _, c := range []struct{ method, path string }{
				{"PUT", "/v1/session/renew/" + sid},
				{"PUT", "/v1/session/destroy/" + sid},
				{"PUT", "/v1/kv/fleet/consul-lock?acquire=" + sid},
			} {
				if code, body := call(t, m, c.method, gw(i)+c.path, ""); code != http.StatusForbidden || !strings.Contains(body, "Permission denied") {
					t.Errorf("another caller's %s %s through replica %d: %d %q, want 403 Permission denied", c.method, c.path, i, code, body)
				}
			}
		}
		if s := consulSessions(t, f, sid); s != 1 {
			t.Fatalf("web's session in Consul after the refusals: %d found", s)
		}
		if code, body := call(t, w, "PUT", gw(2)+"/v1/kv/fleet/consul-lock?acquire="+sid, "held"); code != http.StatusOK || strings.TrimSpace(body) != "true" {
			t.Fatalf("owner's acquire through replica 2: %d %s", code, body)
		}
		if holder := consulLockHolder(t, f, "fleet/consul-lock"); holder != sid {
			t.Fatalf("the lock's session in Consul is %q, want web's %q", holder, sid)
		}
		// Through the balancer's Consul frontend too.
		if code, body := call(t, w, "GET", "https://"+f.lb.Addrs["consul"]+"/v1/kv/fleet/consul-lock", ""); code != http.StatusOK || !strings.Contains(body, sid) {
			t.Fatalf("read of the lock through the balancer: %d %s", code, body)
		}
		if code, body := call(t, w, "PUT", gw(1)+"/v1/session/destroy/"+sid, ""); code != http.StatusOK || strings.TrimSpace(body) != "true" {
			t.Fatalf("owner's destroy through replica 1: %d %s", code, body)
		}
		if s := consulSessions(t, f, sid); s != 0 {
			t.Fatalf("web's session in Consul after its destroy: %d found", s)
		}
		if holder := consulLockHolder(t, f, "fleet/consul-lock"); holder != "" {
			t.Fatalf("the lock in Consul is still held by %q after the session went", holder)
		}
	})
}

// firstKey is the first-created key under prefix in etcd, read directly.
func firstKey(t *testing.T, c *clientv3.Client, prefix string) string {
	t.Helper()
	r, err := c.Get(ctx(t), prefix, clientv3.WithFirstCreate()...)
	if err != nil || len(r.Kvs) == 0 {
		t.Fatalf("first key under %s: %v %v", prefix, r, err)
	}
	return string(r.Kvs[0].Key)
}

// value is key's value in etcd, read directly.
func value(t *testing.T, c *clientv3.Client, key string) string {
	t.Helper()
	r, err := c.Get(ctx(t), key)
	if err != nil || len(r.Kvs) == 0 {
		t.Fatalf("get %s: %v %v", key, r, err)
	}
	return string(r.Kvs[0].Value)
}

// consulSessions counts the sessions with ID sid in Consul, read directly.
func consulSessions(t *testing.T, f *fleet, sid string) int {
	t.Helper()
	code, body := call(t, http.DefaultClient, "GET", "http://"+f.cs.HTTPAddr+"/v1/session/info/"+sid, "")
	if code != http.StatusOK {
		t.Fatalf("session info: %d %s", code, body)
	}
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("session info %q: %v", body, err)
	}
	return len(list)
}

// consulLockHolder is the session holding key in Consul, read directly.
func consulLockHolder(t *testing.T, f *fleet, key string) string {
	t.Helper()
	code, body := call(t, http.DefaultClient, "GET", "http://"+f.cs.HTTPAddr+"/v1/kv/"+key, "")
	if code != http.StatusOK {
		t.Fatalf("kv %s: %d %s", key, code, body)
	}
	var kvs []struct{ Session string }
	if err := json.Unmarshal([]byte(body), &kvs); err != nil || len(kvs) != 1 {
		t.Fatalf("kv %s %q: %v", key, body, err)
	}
	return kvs[0].Session
}
