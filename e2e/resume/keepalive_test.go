package resume

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// leaseTTL is the keep-alive tests' lease TTL, in seconds: short, so that
// a keep-alive stream that does not come back loses its lease within the
// test.
const leaseTTL = 5

// keptLease is a lease, a key attached to it, and how the test follows it.
type keptLease struct {
	name string
	id   clientv3.LeaseID
	key  string
	gone func() error // non-nil once the caller's side gave the lease up
}

// TestKeepAlivesSurviveGatewayKill proves that a lease kept alive by
// client/v3 (KeepAlive) through the balancer, and a concurrency.Session's
// lease on the same client, outlive a kill -9 of the gateway replica
// holding the client's keep-alive stream (found by its /metrics: the one
// whose storegate_streams_open counts the stream) and its restart — twice,
// so the second time the stream is on the other replica — and then a
// SIGTERM of the holder (it drains and exits) and its restart. After each
// restart the test waits until more than the TTL has passed since it (so
// the lease was refreshed after the restart, or etcd would have expired
// it) and at least two TTLs since the kill, reading the remaining TTL
// directly from etcd all along; then each lease must still exist in etcd
// with its key attached, the keep-alive channel must still be open and the
// session not done.
func TestKeepAlivesSurviveGatewayKill(t *testing.T) {
	f := newFleet(t, 2)
	direct := f.direct(t)
	c := f.balanced(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	grant, err := c.Grant(ctx, leaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "/ka/lease", "kept", clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ch, err := c.KeepAlive(kctx, grant.ID)
	if err != nil {
		t.Fatal(err)
	}
	var answers atomic.Int64 // keep-alive answers the client got
	var closed atomic.Bool
	go func() {
		for range ch {
			answers.Add(1)
		}
		closed.Store(true)
	}()

	sess, err := concurrency.NewSession(c, concurrency.WithTTL(leaseTTL), concurrency.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if _, err := c.Put(ctx, "/ka/session", "kept", clientv3.WithLease(sess.Lease())); err != nil {
		t.Fatal(err)
	}
	leases := []keptLease{
		{name: "KeepAlive", id: grant.ID, key: "/ka/lease", gone: func() error {
			if closed.Load() {
				return fmt.Errorf("the keep-alive channel closed")
			}
			return nil
		}},
		{name: "Session", id: sess.Lease(), key: "/ka/session", gone: func() error {
			select {
			case <-sess.Done():
				return fmt.Errorf("the session is done")
			default:
				return nil
			}
		}},
	}

	// kill -9 twice (the second time the stream is on the other replica),
	// then SIGTERM: the replica drains (drain.go) and exits by itself.
	for round, fault := range []string{"kill -9", "kill -9", "SIGTERM"} {
		gi := f.holder(t, methodKeepAlive, 1)
		g := f.gateways[gi]
		t.Logf("round %d: the keep-alive stream is on gateway %d (%s); %s", round, gi, g.Admin, fault)
		killed := time.Now()
		if fault == "SIGTERM" {
			if err := g.Proc.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if !g.Proc.Wait(time.Minute) {
				t.Fatalf("round %d: gateway %d did not exit within a minute of SIGTERM", round, gi)
			}
			t.Logf("round %d: gateway %d drained and exited in %v", round, gi, time.Since(killed).Round(time.Millisecond))
		} else {
			g.Proc.Kill()
		}
		if err := g.Start(ctx); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		before := answers.Load()
		var lost error // a lease gone from etcd or given up: no waiting cures it
		f.env.Eventually(2*time.Minute, func(ctx context.Context) error {
			for _, l := range leases {
				if err := l.gone(); err != nil {
					lost = fmt.Errorf("%s lease %x: %w", l.name, l.id, err)
					return nil
				}
				r, err := direct.TimeToLive(ctx, l.id)
				if err != nil {
					return err
				}
				if r.TTL <= 0 {
					lost = fmt.Errorf("%s lease %x: etcd says its TTL is %d: it expired", l.name, l.id, r.TTL)
					return nil
				}
			}
			if since := time.Since(restarted); since <= leaseTTL*time.Second+time.Second {
				return fmt.Errorf("only %v since the restart", since.Round(time.Millisecond))
			}
			if since := time.Since(killed); since <= 2*leaseTTL*time.Second {
				return fmt.Errorf("only %v since the kill", since.Round(time.Millisecond))
			}
			if n := answers.Load() - before; n < 2 {
				return fmt.Errorf("%d keep-alive answers since the restart", n)
			}
			return nil
		})
		if lost != nil {
			t.Fatalf("round %d: %v", round, lost)
		}
		for _, l := range leases {
			r, err := direct.TimeToLive(ctx, l.id, clientv3.WithAttachedKeys())
			if err != nil {
				t.Fatal(err)
			}
			// The gateway's own owner record (/_storegate/leases/<id>) is
			// on the lease too.
			if r.TTL <= 0 || !slices.ContainsFunc(r.Keys, func(k []byte) bool { return string(k) == l.key }) {
				t.Fatalf("round %d: %s lease %x in etcd: TTL %d, keys %q; want it alive with %s", round, l.name, l.id, r.TTL, r.Keys, l.key)
			}
			g, err := direct.Get(ctx, l.key)
			if err != nil {
				t.Fatal(err)
			}
			if len(g.Kvs) != 1 || clientv3.LeaseID(g.Kvs[0].Lease) != l.id {
				t.Fatalf("round %d: %s in etcd: %v; want it on lease %x", round, l.key, g.Kvs, l.id)
			}
			t.Logf("round %d: %s lease %x alive in etcd (TTL %ds left) with %s, %v after the kill", round, l.name, l.id, r.TTL, l.key,
				time.Since(killed).Round(time.Millisecond))
		}
	}
}
