package policy

import (
	"context"
	"testing"

	"github.com/storegate/storegate/gate"
)

// TestEndpointIntentions: addresses and check_targets in intentions.yaml,
// through the generated module and the shipped authz.rego.
func TestEndpointIntentions(t *testing.T) {
	dir := copyShipped(t)
	writeFile(t, dir, IntentionsFile, `intentions:
  - name: web-services
    source: "spiffe://example.org/web"
    resources: [service, check]
    actions: [register]
    services: ["web-*"]
    addresses: ["10.0.0.0/8:*", "[::1]:8080", "*.svc.local:443"]
    check_targets: ["db.internal:5432", "192.168.0.0/16:*", "127.0.0.1:8500"]
    effect: allow
  - name: web-no-9999
    source: "spiffe://example.org/web"
    resources: [service]
    actions: [register]
    services: ["web-*"]
    addresses: ["*:9999"]
    effect: deny
`)
	e := mustLoad(t, dir, ModeEnforce)
	web := identity("spiffe://example.org/web")
	reg := func(addr string, port int, checks ...gate.Check) *gate.Op {
		return &gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceService, Action: gate.ActionRegister,
			Service: &gate.Service{Name: "web-a", ID: "web-a", Address: addr, Port: port, Checks: checks}}
	}
	tcp := func(host string, port int, own bool, guarded string) gate.Check {
		return gate.Check{Kind: gate.CheckTCP, Target: gate.CheckTarget{Host: host, Port: port, Own: own, Guarded: guarded}}
	}
	for _, tt := range []struct {
		name string
		op   *gate.Op
		want bool
	}{
		{"inside a CIDR", reg("10.1.2.3", 80), true},
		{"an IPv6 host and port", reg("::1", 8080), true},
		{"the wrong port", reg("::1", 8081), false},
		{"a name glob", reg("api.svc.local", 443), true},
		{"outside", reg("192.0.2.1", 80), false},
		{"a deny intention with addresses", reg("10.0.0.9", 9999), false},
		{"a tagged address outside", &gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceService, Action: gate.ActionRegister,
			Service: &gate.Service{Name: "web-a", Address: "10.0.0.1", Port: 80,
				TaggedAddresses: map[string]gate.Endpoint{"wan": {Address: "203.0.113.9", Port: 80}}}}, false},
		{"own check", reg("10.0.0.1", 80, tcp("10.0.0.1", 80, true, "")), true},
		{"a named target", reg("10.0.0.1", 80, tcp("db.internal", 5432, false, "")), true},
		{"a target in a CIDR", reg("10.0.0.1", 80, tcp("192.168.4.4", 22, false, "")), true},
		{"an unnamed target", reg("10.0.0.1", 80, tcp("db.internal", 5433, false, "")), false},
		{"a guarded target named exactly", reg("10.0.0.1", 80, tcp("127.0.0.1", 8500, false, "consul")), true},
		{"a guarded target in a CIDR", reg("10.0.0.1", 80, tcp("192.168.0.1", 2379, false, "etcd")), false},
		{"own but guarded", reg("10.0.0.1", 2379, tcp("10.0.0.1", 2379, true, "etcd")), false},
	} {
		d, err := e.Authorize(context.Background(), web, tt.op)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Effect == gate.Allow; got != tt.want {
			t.Errorf("%s: %v (%s), want allowed %v", tt.name, d.Effect, d.Reason, tt.want)
		}
	}
}

// TestNodeOpsAreNotCached: a node op's decision depends on the node it
// names (a Rego may judge it); the cache, keyed on keys, must not answer one
// node's op with another's decision.
func TestNodeOpsAreNotCached(t *testing.T) {
	dir := copyShipped(t)
	writeFile(t, dir, "nodes.rego", `package storegate.authz

allow if input.op.node.name == "ok"
`)
	e, err := Load(context.Background(), Config{Dir: dir, Mode: ModeEnforce, Logger: discardLogger(),
		EvalTimeout: mustLoadTimeout, CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	web := identity("spiffe://example.org/web")
	op := func(name string) *gate.Op {
		return &gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceNode, Action: gate.ActionRegister, Node: &gate.Node{Name: name}}
	}
	for _, tt := range []struct {
		node string
		want gate.Effect
	}{{"ok", gate.Allow}, {"other", gate.Deny}, {"ok", gate.Allow}} {
		d, err := e.Authorize(context.Background(), web, op(tt.node))
		if err != nil || d.Effect != tt.want {
			t.Errorf("node %s: %v %v, want %v", tt.node, d.Effect, err, tt.want)
		}
	}
}
