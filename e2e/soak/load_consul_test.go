package soak

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
)

// consulLoad is the Consul side of the load, as web.
type consulLoad struct {
	// run names the load's run: its keys are its own.
	run    string
	f      *fleet
	t      *tally
	web    *api.Client
	direct *api.Client
}

// kv is worker w's loop body: put, get (the value just written), a CAS
// with the current index (true) and a stale one (false) every 3rd round, a
// blocking query every 4th, a delete every 8th.
func (l *consulLoad) kv(w int) func(ctx context.Context, i int) {
	prefix := fmt.Sprintf("soak/c/%s/w%d/", l.run, w)
	var attempted atomic.Int64
	return func(ctx context.Context, i int) {
		kv := l.web.KV()
		key := prefix + "k" + strconv.Itoa(i%8)
		v := value(key, i)
		attempted.Store(int64(i))
		wo := (&api.WriteOptions{}).WithContext(ctx)
		qo := (&api.QueryOptions{}).WithContext(ctx)
		l.t.op("consul put")
		if _, err := kv.Put(&api.KVPair{Key: key, Value: []byte(v)}, wo); err != nil {
			l.t.fail("consul put", err)
			return
		}
		l.t.op("consul get")
		p, meta, err := kv.Get(key, qo)
		switch {
		case err != nil:
			l.t.fail("consul get", err)
			return
		case p == nil || string(p.Value) != v:
			l.t.wrongf("consul get %s after put %q: %v", key, v, p)
			return
		}
		if i%3 == 0 {
			v2 := v + "@cas"
			l.t.op("consul cas")
			ok, _, err := kv.CAS(&api.KVPair{Key: key, Value: []byte(v2), ModifyIndex: p.ModifyIndex}, wo)
			switch {
			case err != nil:
				l.t.fail("consul cas", err)
			case !ok:
				l.t.wrongf("consul cas %s at its own index %d failed", key, p.ModifyIndex)
			default:
				l.t.op("consul cas")
				stale, _, err := kv.CAS(&api.KVPair{Key: key, Value: []byte("stale"), ModifyIndex: p.ModifyIndex}, wo)
				if err != nil {
					l.t.fail("consul cas", err)
				} else if stale {
					l.t.wrongf("consul cas %s at a stale index %d succeeded", key, p.ModifyIndex)
				}
				v = v2
			}
		}
		if i%4 == 1 {
			// A blocking query that nothing wakes: it returns after
			// about its wait (plus up to 1/16 of jitter), unchanged.
			l.t.op("consul blocking get")
			bq := (&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 500 * time.Millisecond}).WithContext(ctx)
			b, _, err := kv.Get(key, bq)
			if err != nil {
				l.t.fail("consul blocking get", err)
			} else if b == nil || !strings.HasPrefix(string(b.Value), key+"@") ||
				!produced(key, strings.TrimSuffix(string(b.Value), "@cas"), attempted.Load()) {
				l.t.wrongf("consul blocking get %s: %v, which no write produced", key, b)
			}
		}
		if i%8 == 7 {
			l.t.op("consul delete")
			if _, err := kv.Delete(key, wo); err != nil {
				l.t.fail("consul delete", err)
			}
			l.t.op("consul get")
			if p, _, err := kv.Get(key, qo); err != nil {
				l.t.fail("consul get", err)
			} else if p != nil {
				l.t.wrongf("consul get %s after delete: %q", key, p.Value)
			}
		}
		if i%6 == 2 {
			l.t.op("consul list")
			ps, _, err := kv.List(prefix, qo)
			if err != nil {
				l.t.fail("consul list", err)
			}
			for _, p := range ps {
				if !produced(p.Key, strings.TrimSuffix(string(p.Value), "@cas"), attempted.Load()) {
					l.t.wrongf("consul list %s: %s = %q, which no write produced", prefix, p.Key, p.Value)
				}
			}
		}
	}
}

// session creates a session, renews it, acquires a key with it (checked
// in the agent), releases it, and destroys the session (checked too).
func (l *consulLoad) session(w int) func(ctx context.Context, i int) {
	key := fmt.Sprintf("soak/s/w%d", w)
	return func(ctx context.Context, i int) {
		s := l.web.Session()
		wo := (&api.WriteOptions{}).WithContext(ctx)
		qo := (&api.QueryOptions{}).WithContext(ctx)
		l.t.op("consul session create")
		id, _, err := s.Create(&api.SessionEntry{Name: fmt.Sprintf("soak-w%d", w), TTL: "30s"}, wo)
		if err != nil {
			l.t.fail("consul session create", err)
			return
		}
		destroyed := false
		defer func() {
			if !destroyed {
				_, _ = l.direct.Session().Destroy(id, nil)
			}
		}()
		l.t.op("consul session renew")
		if e, _, err := s.Renew(id, wo); err != nil {
			l.t.fail("consul session renew", err)
			return
		} else if e == nil || e.ID != id {
			l.t.wrongf("consul session renew %s: %v", id, e)
		}
		l.t.op("consul acquire")
		v := value(key, i)
		if ok, _, err := l.web.KV().Acquire(&api.KVPair{Key: key, Value: []byte(v), Session: id}, wo); err != nil {
			l.t.fail("consul acquire", err)
			return
		} else if !ok {
			l.t.wrongf("consul acquire %s with a fresh session %s: false", key, id)
		}
		if p, _, err := l.direct.KV().Get(key, qo); err != nil {
			l.t.fail("consul direct get", err)
		} else if p == nil || p.Session != id || string(p.Value) != v {
			l.t.wrongf("consul agent: %s = %v, want held by %s with %q", key, p, id, v)
		}
		l.t.op("consul release")
		if ok, _, err := l.web.KV().Release(&api.KVPair{Key: key, Session: id}, wo); err != nil {
			l.t.fail("consul release", err)
		} else if !ok {
			l.t.wrongf("consul release %s by its holder %s: false", key, id)
		}
		l.t.op("consul session destroy")
		if _, err := s.Destroy(id, wo); err != nil {
			l.t.fail("consul session destroy", err)
			return
		}
		destroyed = true
		if e, _, err := l.direct.Session().Info(id, qo); err != nil {
			l.t.fail("consul direct session info", err)
		} else if e != nil {
			l.t.wrongf("consul agent: session %s outlived its destroy", id)
		}
	}
}
