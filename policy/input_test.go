package policy

import (
	"encoding/json"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/storegate/storegate/gate"
)

func TestInput(t *testing.T) {
	tests := []struct {
		name   string
		caller gate.Identity
		op     *gate.Op
		want   string
	}{
		{"single key", web, &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionWrite,
			Method: "/etcdserverpb.KV/Put", Keys: gate.KeyRange{Key: []byte("/app/x")}, Lease: 0x1234, ValueSize: 42, PrevKV: true, TxnIndex: 3},
			`{"caller":{"id":"spiffe://example.org/web","path":"/web","trust_domain":"example.org"},` +
				`"op":{"action":"write","cover":"/app/x","datacenter":"","foreign":false,"key":"/app/x","lease":4660,"method":"/etcdserverpb.KV/Put",` +
				`"prefix":false,"prev_kv":true,"protocol":"etcd","range":false,"range_end":"","resource":"kv","session":"","txn_index":3,"value_size":42}}`},
		{"prefix", web, prefixOp(gate.ResourceWatch, gate.ActionWatch, "/app/"),
			`{"caller":{"id":"spiffe://example.org/web","path":"/web","trust_domain":"example.org"},` +
				`"op":{"action":"watch","cover":"/app/","datacenter":"","foreign":false,"key":"/app/","lease":0,"method":"",` +
				`"prefix":true,"prev_kv":false,"protocol":"etcd","range":true,"range_end":"/app0","resource":"watch","session":"","txn_index":0,"value_size":0}}`},
		{"range", admin, &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead, Keys: gate.KeyRange{Key: []byte("/a/b"), End: []byte("/a/d")}},
			`{"caller":{"id":"spiffe://example.org/admin","path":"/admin","trust_domain":"example.org"},` +
				`"op":{"action":"read","cover":"/a/","datacenter":"","foreign":false,"key":"/a/b","lease":0,"method":"",` +
				`"prefix":false,"prev_kv":false,"protocol":"etcd","range":true,"range_end":"/a/d","resource":"kv","session":"","txn_index":0,"value_size":0}}`},
		{"service", web, &gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceService, Action: gate.ActionRegister,
			Method: "PUT /v1/agent/service/register", Datacenter: "dc1", Session: "s1",
			Service: &gate.Service{Name: "web", ID: "web-1", Tags: []string{"a"}, Meta: map[string]string{"k": "v"}, Address: "10.0.0.1", Port: 8080,
				Kind: "connect-proxy", Proxy: &gate.Proxy{DestinationName: "api", Upstreams: []string{"db"}},
				TaggedAddresses: map[string]gate.Endpoint{"lan": {Address: "10.0.0.1", Port: 8080}},
				Checks: []gate.Check{{Kind: gate.CheckHTTP, ID: "c1", Target: gate.CheckTarget{URL: "http://10.0.0.1:8080/h", Method: "GET",
					Headers: []string{"X-A"}, Host: "10.0.0.1", Port: 8080, Own: true}}}},
			Node: &gate.Node{Name: "n1", Address: "10.0.0.1"}},
			`{"caller":{"id":"spiffe://example.org/web","path":"/web","trust_domain":"example.org"},` +
				`"op":{"action":"register","cover":"","datacenter":"dc1","foreign":false,"key":"","lease":0,"method":"PUT /v1/agent/service/register",` +
				`"node":{"address":"10.0.0.1","id":"","meta":{},"name":"n1","tagged_addresses":{}},` +
				`"prefix":false,"prev_kv":false,"protocol":"consul","range":false,"range_end":"","resource":"service",` +
				`"service":{"address":"10.0.0.1","checks":[{"alias_node":"","alias_service":"","id":"c1","kind":"http","name":"","os_service":"",` +
				`"target":{"body":false,"guarded":"","headers":["X-A"],"host":"10.0.0.1","method":"GET","own":true,"port":8080,"url":"http://10.0.0.1:8080/h"}}],` +
				`"id":"web-1","kind":"connect-proxy","meta":{"k":"v"},"name":"web","node":"","port":8080,` +
				`"proxy":{"destination_id":"","destination_name":"api","expose_ports":[],"local_guarded":"","local_service":{"address":"","port":0},"upstreams":["db"]},"sidecar_of":"",` +
				`"tagged_addresses":{"lan":{"address":"10.0.0.1","port":8080}},"tags":["a"]},` +
				`"session":"s1","txn_index":0,"value_size":0}}`},
		{"new session", web, &gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceSession, Action: gate.ActionGrant,
			NewSession: &gate.NewSession{Node: "n1", NodeChecks: []string{"serfHealth"}, ServiceChecks: []string{"c1"}, Behavior: "delete", TTL: "10s"}},
			`{"caller":{"id":"spiffe://example.org/web","path":"/web","trust_domain":"example.org"},` +
				`"op":{"action":"grant","cover":"","datacenter":"","foreign":false,"key":"","lease":0,"method":"",` +
				`"new_session":{"behavior":"delete","node":"n1","node_checks":["serfHealth"],"service_checks":["c1"],"ttl":"10s"},` +
				`"prefix":false,"prev_kv":false,"protocol":"consul","range":false,"range_end":"","resource":"session","session":"","txn_index":0,"value_size":0}}`},
		{"foreign lease", web, &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceLease, Action: gate.ActionKeepalive,
			Method: "/etcdserverpb.Lease/LeaseKeepAlive", Lease: 7, Foreign: true, Owner: "spiffe://example.org/admin"},
			`{"caller":{"id":"spiffe://example.org/web","path":"/web","trust_domain":"example.org"},` +
				`"op":{"action":"keepalive","cover":"","datacenter":"","foreign":true,"key":"","lease":7,"method":"/etcdserverpb.Lease/LeaseKeepAlive",` +
				`"owner":"spiffe://example.org/admin","prefix":false,"prev_kv":false,"protocol":"etcd","range":false,"range_end":"","resource":"lease","session":"","txn_index":0,"value_size":0}}`},
		{"foreign lease with no owner on record", web, &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceLease, Action: gate.ActionRevoke, Foreign: true},
			`{"caller":{"id":"spiffe://example.org/web","path":"/web","trust_domain":"example.org"},` +
				`"op":{"action":"revoke","cover":"","datacenter":"","foreign":true,"key":"","lease":0,"method":"",` +
				`"owner":"","prefix":false,"prev_kv":false,"protocol":"etcd","range":false,"range_end":"","resource":"lease","session":"","txn_index":0,"value_size":0}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := ast.JSON(Input(tt.caller, tt.op))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(v)
			if string(got) != tt.want {
				t.Errorf("Input =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestInputKeepsKeyBytes(t *testing.T) {
	key := []byte{'/', 0xff, 0x00, 'k'}
	in := Input(web, kvOp(gate.ActionRead, string(key))).(ast.Object)
	got := in.Get(ast.StringTerm("op")).Value.(ast.Object).Get(ast.StringTerm("key")).Value
	if got.Compare(ast.String(key)) != 0 {
		t.Errorf("key = %v", got)
	}
}

func TestInputAllocations(t *testing.T) {
	op := kvOp(gate.ActionRead, "/app/x")
	Input(web, op) // caches the caller
	if n := testing.AllocsPerRun(100, func() { Input(web, op) }); n > 20 {
		t.Errorf("Input allocates %v times", n)
	}
}
