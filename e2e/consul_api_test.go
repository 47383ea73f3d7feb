package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// consulAPI is a consul/api client as who, through the gateway at addr
// (https://host:port), configured as applications configure it.
func consulAPI(t *testing.T, p *pki, addr, who string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = strings.TrimPrefix(addr, "https://")
	cfg.Scheme = "https"
	cfg.TLSConfig = api.TLSConfig{CAFile: p.bundle(), CertFile: p.path(who + ".pem"), KeyFile: p.path(who + "-key.pem")}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConsulAPIClient: github.com/hashicorp/consul/api works unchanged
// through the gateway — KV with CAS, listing, sessions with acquire and
// release, a blocking query, a transaction, service registration, catalog
// and status reads — and what it wrote is what the agent holds.
func TestConsulAPIClient(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, "")
	c := consulAPI(t, p, gwAddr, "admin")
	direct, err := api.NewClient(&api.Config{Address: agent.httpAddr})
	if err != nil {
		t.Fatal(err)
	}
	kv := c.KV()

	// Put, get, CAS.
	if _, err := kv.Put(&api.KVPair{Key: "capi/a", Value: []byte("1"), Flags: 7}, nil); err != nil {
		t.Fatalf("put: %v", err)
	}
	pair, meta, err := kv.Get("capi/a", nil)
	if err != nil || pair == nil || string(pair.Value) != "1" || pair.Flags != 7 || meta.LastIndex == 0 {
		t.Fatalf("get: %+v %+v %v", pair, meta, err)
	}
	if ok, _, err := kv.CAS(&api.KVPair{Key: "capi/a", Value: []byte("2"), ModifyIndex: pair.ModifyIndex + 1000}, nil); err != nil || ok {
		t.Errorf("CAS with a stale index: ok=%v err=%v", ok, err)
	}
	if ok, _, err := kv.CAS(&api.KVPair{Key: "capi/a", Value: []byte("2"), ModifyIndex: pair.ModifyIndex}, nil); err != nil || !ok {
		t.Errorf("CAS: ok=%v err=%v", ok, err)
	}
	if _, err := kv.Put(&api.KVPair{Key: "capi/dir/b", Value: []byte("3")}, nil); err != nil {
		t.Fatal(err)
	}
	pairs, _, err := kv.List("capi/", nil)
	if err != nil || len(pairs) != 2 || string(pairs[0].Value) != "2" || string(pairs[1].Value) != "3" {
		t.Errorf("list: %v %v", pairs, err)
	}
	keys, _, err := kv.Keys("capi/", "/", nil)
	if err != nil || strings.Join(keys, ",") != "capi/a,capi/dir/" {
		t.Errorf("keys with a separator: %v %v", keys, err)
	}

	// A blocking query returns when the key changes, with a newer index.
	_, meta, err = kv.Get("capi/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *api.KVPair, 1)
	go func() {
		p, _, err := kv.Get("capi/a", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
		if err != nil {
			t.Errorf("blocking get: %v", err)
		}
		got <- p
	}()
	if _, err := kv.Put(&api.KVPair{Key: "capi/a", Value: []byte("changed")}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p == nil || string(p.Value) != "changed" {
			t.Errorf("blocking get answered %+v", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the blocking get did not return after the change")
	}

	// Sessions, acquire and release.
	sid, _, err := c.Session().Create(&api.SessionEntry{Name: "capi", TTL: "30s"}, nil)
	if err != nil {
		t.Fatalf("session create: %v", err)
	}
	if ok, _, err := kv.Acquire(&api.KVPair{Key: "capi/lock", Value: []byte("me"), Session: sid}, nil); err != nil || !ok {
		t.Errorf("acquire: %v %v", ok, err)
	}
	if held, _, _ := direct.KV().Get("capi/lock", nil); held == nil || held.Session != sid {
		t.Errorf("the agent does not show the lock held by %s: %+v", sid, held)
	}
	if ok, _, err := kv.Release(&api.KVPair{Key: "capi/lock", Session: sid}, nil); err != nil || !ok {
		t.Errorf("release: %v %v", ok, err)
	}
	if _, _, err := c.Session().Renew(sid, nil); err != nil {
		t.Errorf("renew: %v", err)
	}
	if _, err := c.Session().Destroy(sid, nil); err != nil {
		t.Errorf("destroy: %v", err)
	}

	// A transaction.
	ok, resp, _, err := c.Txn().Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "capi/t1", Value: []byte("x")}},
		{KV: &api.KVTxnOp{Verb: api.KVGet, Key: "capi/dir/b"}},
	}, nil)
	if err != nil || !ok || len(resp.Results) != 2 || string(resp.Results[1].KV.Value) != "3" {
		t.Errorf("txn: ok=%v %+v %v", ok, resp, err)
	}

	// Service registration, catalog and status reads.
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "capi-svc", Port: 8080, Tags: []string{"v1"}}); err != nil {
		t.Fatalf("service register: %v", err)
	}
	svcs, _, err := c.Catalog().Services(nil)
	if err != nil || strings.Join(svcs["capi-svc"], ",") != "v1" {
		t.Errorf("catalog services: %v %v", svcs, err)
	}
	if leader, err := c.Status().Leader(); err != nil || leader == "" {
		t.Errorf("status leader: %q %v", leader, err)
	}
	if err := c.Agent().ServiceDeregister("capi-svc"); err != nil {
		t.Errorf("service deregister: %v", err)
	}

	// What the client wrote is what the agent holds.
	for k, want := range map[string]string{"capi/a": "changed", "capi/dir/b": "3", "capi/t1": "x"} {
		if p, _, err := direct.KV().Get(k, nil); err != nil || p == nil || string(p.Value) != want {
			t.Errorf("agent's %s = %+v %v, want %q", k, p, err, want)
		}
	}
}
