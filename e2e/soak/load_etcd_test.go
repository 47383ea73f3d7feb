package soak

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// etcdLoad is the etcd side of the load: web writes and reads its own
// keys, reader reads them, and every answer is checked against what was
// written.
type etcdLoad struct {
	// run names the load's run: its keys are its own.
	run    string
	f      *fleet
	t      *tally
	web    *clientv3.Client
	reader *clientv3.Client
}

// value is what writer w's i-th write of key holds: the key and the write
// number, so that a read can tell a value no write produced.
func value(key string, i int) string { return key + "@" + strconv.Itoa(i) }

// produced reports whether v is a value some write of key up to attempt
// number max produced.
func produced(key, v string, max int64) bool {
	k, n, ok := strings.Cut(v, "@")
	i, err := strconv.ParseInt(n, 10, 64)
	return ok && err == nil && k == key && i >= 0 && i <= max
}

// kv is worker w's loop body: Put, then Get (the value just written), a
// Txn on it every 4th round, a DeleteRange every 8th, reader's Range of
// the worker's prefix every 5th; every 10th an encrypted key and a schema
// key.
func (l *etcdLoad) kv(w int) func(ctx context.Context, i int) {
	prefix := fmt.Sprintf("/soak/kv/%s/w%d/", l.run, w)
	var attempted atomic.Int64
	return func(ctx context.Context, i int) {
		key := prefix + "k" + strconv.Itoa(i%16)
		v := value(key, i)
		attempted.Store(int64(i))
		l.t.op("etcd put")
		if _, err := l.web.Put(ctx, key, v); err != nil {
			l.t.fail("etcd put", err)
			return
		}
		l.t.op("etcd get")
		r, err := l.web.Get(ctx, key)
		switch {
		case err != nil:
			l.t.fail("etcd get", err)
			return
		case len(r.Kvs) != 1 || string(r.Kvs[0].Value) != v:
			l.t.wrongf("etcd get %s after put %q: %v", key, v, r.Kvs)
			return
		}
		if i%4 == 0 {
			v2 := value(key, i) + "@txn"
			l.t.op("etcd txn")
			tr, err := l.web.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", v)).
				Then(clientv3.OpPut(key, v2), clientv3.OpGet(key)).Else(clientv3.OpGet(key)).Commit()
			switch {
			case err != nil:
				l.t.fail("etcd txn", err)
			case !tr.Succeeded:
				l.t.wrongf("etcd txn on %s = %q did not succeed", key, v)
			case len(tr.Responses) != 2 || len(tr.Responses[1].GetResponseRange().Kvs) != 1 ||
				string(tr.Responses[1].GetResponseRange().Kvs[0].Value) != v2:
				l.t.wrongf("etcd txn on %s: the get after the put = %v", key, tr.Responses)
			}
		}
		if i%8 == 7 {
			l.t.op("etcd delete")
			if d, err := l.web.Delete(ctx, key); err != nil {
				l.t.fail("etcd delete", err)
			} else if d.Deleted != 1 {
				l.t.wrongf("etcd delete %s deleted %d", key, d.Deleted)
			}
			l.t.op("etcd get")
			if r, err := l.web.Get(ctx, key); err != nil {
				l.t.fail("etcd get", err)
			} else if len(r.Kvs) != 0 {
				l.t.wrongf("etcd get %s after delete: %v", key, r.Kvs)
			}
		}
		if i%5 == 0 {
			l.t.op("etcd range")
			r, err := l.reader.Get(ctx, prefix, clientv3.WithPrefix())
			if err != nil {
				l.t.fail("etcd range", err)
			} else {
				for _, kv := range r.Kvs {
					if !produced(string(kv.Key), strings.TrimSuffix(string(kv.Value), "@txn"), attempted.Load()) {
						l.t.wrongf("etcd range %s as reader: %s = %q, which no write produced", prefix, kv.Key, kv.Value)
					}
				}
			}
		}
		if i%10 == 3 {
			l.private(ctx, w, i)
			l.schema(ctx, w, i)
		}
	}
}

// private writes under the encrypt plugin's prefix: the gateway gives the
// value back, the store holds something else.
func (l *etcdLoad) private(ctx context.Context, w, i int) {
	key := fmt.Sprintf("%sw%d", privatePrefix, w)
	v := value(key, i)
	l.t.op("etcd put")
	if _, err := l.web.Put(ctx, key, v); err != nil {
		l.t.fail("etcd put", err)
		return
	}
	l.t.op("etcd get")
	r, err := l.web.Get(ctx, key)
	if err != nil {
		l.t.fail("etcd get", err)
		return
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != v {
		l.t.wrongf("etcd get %s (encrypted) = %v, want %q", key, r.Kvs, v)
	}
	d, err := l.f.direct.Get(ctx, key)
	if err != nil {
		l.t.fail("etcd direct get", err)
		return
	}
	if len(d.Kvs) != 1 || bytes.Contains(d.Kvs[0].Value, []byte(v)) {
		l.t.wrongf("etcd store holds %s in the clear: %v", key, d.Kvs)
	}
}

// schema writes a valid and an invalid JSON value under the schema
// plugin's prefix: the second is refused and the store keeps the first.
func (l *etcdLoad) schema(ctx context.Context, w, i int) {
	key := fmt.Sprintf("%sw%d", configPrefix, w)
	good := fmt.Sprintf(`{"name":"w%d-%d"}`, w, i)
	l.t.op("etcd put")
	if _, err := l.web.Put(ctx, key, good); err != nil {
		l.t.fail("etcd put", err)
		return
	}
	l.t.op("etcd put (refused)")
	if _, err := l.web.Put(ctx, key, `{"no-name":true}`); err == nil {
		l.t.wrongf("etcd put of a value without a name under %s was allowed", configPrefix)
	} else if isEtcdDenied(err) {
		l.t.expected(classRefused)
	} else {
		l.t.fail("etcd put (refused)", err)
	}
	if d, err := l.f.direct.Get(ctx, key); err != nil {
		l.t.fail("etcd direct get", err)
	} else if len(d.Kvs) != 1 || string(d.Kvs[0].Value) != good {
		l.t.wrongf("etcd store: %s = %v, want %q (the refused write must not land)", key, d.Kvs, good)
	}
}

// watch opens a watch (as web, and every other round as reader too) on
// the worker's prefix, writes three keys, checks the events, and closes
// the watches.
func (l *etcdLoad) watch(w int) func(ctx context.Context, i int) {
	prefix := fmt.Sprintf("/soak/watch/w%d/", w)
	return func(ctx context.Context, i int) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		watchers := []*clientv3.Client{l.web}
		if i%2 == 0 {
			watchers = append(watchers, l.reader)
		}
		var chans []clientv3.WatchChan
		for _, c := range watchers {
			l.t.op("etcd watch")
			ch := c.Watch(clientv3.WithRequireLeader(wctx), prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
			select {
			case resp, ok := <-ch:
				if !ok || resp.Err() != nil || !resp.Created {
					l.t.fail("etcd watch", fmt.Errorf("watch create: %v (closed: %v)", resp.Err(), !ok))
					return
				}
			case <-ctx.Done():
				l.t.fail("etcd watch", ctx.Err())
				return
			}
			chans = append(chans, ch)
		}
		var want []string
		for k := range 3 {
			key := prefix + strconv.Itoa(k)
			v := value(key, i)
			want = append(want, key+"="+v)
			l.t.op("etcd put")
			if _, err := l.web.Put(ctx, key, v); err != nil {
				l.t.fail("etcd put", err)
				return
			}
		}
		// A watch without a start revision starts at its member's
		// revision, and a member may lag the one that applied the puts:
		// it may first see earlier rounds' writes of the prefix. Those
		// are right answers if some write produced them; the round's own
		// must follow, in order.
		for n, ch := range chans {
			var got []string
			ended := func() bool {
				return len(got) >= len(want) && strings.Join(got[len(got)-len(want):], " ") == strings.Join(want, " ")
			}
			for !ended() && len(got) < 30 {
				select {
				case resp, ok := <-ch:
					if !ok || resp.Err() != nil {
						l.t.fail("etcd watch", fmt.Errorf("watch %d after %v: %v (closed: %v)", n, got, resp.Err(), !ok))
						return
					}
					for _, ev := range resp.Events {
						got = append(got, string(ev.Kv.Key)+"="+string(ev.Kv.Value))
					}
				case <-ctx.Done():
					l.t.fail("etcd watch", fmt.Errorf("watch %d: events %v of %v: %w", n, got, want, ctx.Err()))
					return
				}
			}
			if !ended() {
				l.t.wrongf("etcd watch %s (watcher %d): events %v, want them to end with %v", prefix, n, got, want)
				continue
			}
			for _, e := range got[:len(got)-len(want)] {
				k, v, _ := strings.Cut(e, "=")
				if !produced(k, v, int64(i-1)) {
					l.t.wrongf("etcd watch %s (watcher %d): event %s, which no earlier write produced", prefix, n, e)
				}
			}
		}
	}
}

// lease grants a lease, puts a key on it, keeps it alive (once, and every
// third round over a keep-alive stream), asks its time to live, revokes it,
// and checks in the store that the key went with it.
func (l *etcdLoad) lease(w int) func(ctx context.Context, i int) {
	key := fmt.Sprintf("/soak/lease/w%d", w)
	return func(ctx context.Context, i int) {
		l.t.op("etcd lease grant")
		g, err := l.web.Grant(ctx, 30)
		if err != nil {
			l.t.fail("etcd lease grant", err)
			return
		}
		revoked := false
		defer func() {
			if !revoked {
				_, _ = l.web.Revoke(ctx, g.ID)
			}
		}()
		l.t.op("etcd put")
		if _, err := l.web.Put(ctx, key, value(key, i), clientv3.WithLease(g.ID)); err != nil {
			l.t.fail("etcd put", err)
			return
		}
		l.t.op("etcd lease keepalive")
		if _, err := l.web.KeepAliveOnce(ctx, g.ID); err != nil {
			l.t.fail("etcd lease keepalive", err)
			return
		}
		if i%3 == 0 {
			kctx, cancel := context.WithCancel(ctx)
			ch, err := l.web.KeepAlive(kctx, g.ID)
			l.t.op("etcd lease keepalive stream")
			if err != nil {
				l.t.fail("etcd lease keepalive stream", err)
			} else {
				select {
				case r, ok := <-ch:
					if !ok || r.ID != g.ID {
						l.t.fail("etcd lease keepalive stream", fmt.Errorf("keep-alive answer %v (closed: %v)", r, !ok))
					}
				case <-ctx.Done():
					l.t.fail("etcd lease keepalive stream", ctx.Err())
				}
			}
			cancel()
		}
		l.t.op("etcd lease ttl")
		ttl, err := l.web.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
		if err != nil {
			l.t.fail("etcd lease ttl", err)
			return
		}
		if ttl.TTL <= 0 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != key {
			l.t.wrongf("etcd lease %x: ttl %d, keys %q, want %s", g.ID, ttl.TTL, ttl.Keys, key)
		}
		l.t.op("etcd lease revoke")
		if _, err := l.web.Revoke(ctx, g.ID); err != nil {
			l.t.fail("etcd lease revoke", err)
			return
		}
		revoked = true
		if d, err := l.f.direct.Get(ctx, key); err != nil {
			l.t.fail("etcd direct get", err)
		} else if len(d.Kvs) != 0 {
			l.t.wrongf("etcd store: %s outlived its revoked lease: %v", key, d.Kvs)
		}
	}
}

// lockElect takes and releases a lock (v3lock) and campaigns, proclaims
// and resigns in an election (v3election), on one lease, checking the
// leader's value each time.
func (l *etcdLoad) lockElect(w int) func(ctx context.Context, i int) {
	lockName := fmt.Sprintf("/soak/locks/w%d", w)
	election := fmt.Sprintf("/soak/election/w%d", w)
	locks := v3lockpb.NewLockClient(l.web.ActiveConnection())
	elections := v3electionpb.NewElectionClient(l.web.ActiveConnection())
	return func(ctx context.Context, i int) {
		l.t.op("etcd lease grant")
		g, err := l.web.Grant(ctx, 30)
		if err != nil {
			l.t.fail("etcd lease grant", err)
			return
		}
		defer func() {
			l.t.op("etcd lease revoke")
			if _, err := l.web.Revoke(ctx, g.ID); err != nil {
				l.t.fail("etcd lease revoke", err)
			}
		}()
		l.t.op("etcd lock")
		lk, err := locks.Lock(ctx, &v3lockpb.LockRequest{Name: []byte(lockName), Lease: int64(g.ID)})
		if err != nil {
			l.t.fail("etcd lock", err)
			return
		}
		if !strings.HasPrefix(string(lk.Key), lockName+"/") {
			l.t.wrongf("etcd lock %s: key %q", lockName, lk.Key)
		}
		if d, err := l.f.direct.Get(ctx, string(lk.Key)); err != nil {
			l.t.fail("etcd direct get", err)
		} else if len(d.Kvs) != 1 || d.Kvs[0].Lease != int64(g.ID) {
			l.t.wrongf("etcd store: lock key %s = %v, want it on lease %x", lk.Key, d.Kvs, g.ID)
		}
		l.t.op("etcd unlock")
		if _, err := locks.Unlock(ctx, &v3lockpb.UnlockRequest{Key: lk.Key}); err != nil {
			l.t.fail("etcd unlock", err)
			return
		}
		v := value(election, i)
		l.t.op("etcd campaign")
		c, err := elections.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte(election), Lease: int64(g.ID), Value: []byte(v)})
		if err != nil {
			l.t.fail("etcd campaign", err)
			return
		}
		leaderIs := func(want string) {
			l.t.op("etcd leader")
			r, err := elections.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte(election)})
			if err != nil {
				l.t.fail("etcd leader", err)
			} else if r.Kv == nil || string(r.Kv.Value) != want {
				l.t.wrongf("etcd election %s: leader %v, want %q", election, r.Kv, want)
			}
		}
		leaderIs(v)
		l.t.op("etcd proclaim")
		if _, err := elections.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: c.Leader, Value: []byte(v + "@p")}); err != nil {
			l.t.fail("etcd proclaim", err)
		} else {
			leaderIs(v + "@p")
		}
		l.t.op("etcd resign")
		if _, err := elections.Resign(ctx, &v3electionpb.ResignRequest{Leader: c.Leader}); err != nil {
			l.t.fail("etcd resign", err)
		}
	}
}

// emptyOpTxn is a Txn whose only op is empty: bad input.
var emptyOpTxn = &pb.TxnRequest{Success: []*pb.RequestOp{{}}}
