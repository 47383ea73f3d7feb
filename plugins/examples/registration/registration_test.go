package main

import (
	"testing"

	"github.com/storegate/storegate/plugins/sdk"
)

// web is the test caller; its last path segment is "web".
const web = "spiffe://example.org/ns/prod/web"

// register is a service (or check) registration op by caller.
func register(r sdk.Resource, caller, body string) *sdk.Op {
	return &sdk.Op{Protocol: sdk.ProtocolConsul, Resource: r, Action: sdk.ActionRegister, Flags: sdk.FlagValue,
		Caller: []byte(caller), Value: []byte(body), Service: []byte("svc")}
}

// judge runs the hook and returns "" for continue or the denial's reason.
func judge(t *testing.T, op *sdk.Op) string {
	t.Helper()
	r := onRequest(op)
	switch r.Verdict() {
	case sdk.VerdictContinue:
		return ""
	case sdk.VerdictDeny:
		return r.Reason()
	}
	t.Fatalf("verdict %d from a validator", r.Verdict())
	return ""
}

// TestServiceRules checks names, owners and script checks in both the
// agent and the catalog form.
func TestServiceRules(t *testing.T) {
	if err := configure([]byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, body, want string }{
		{"agent ok", `{"Name":"api","Port":80,"Meta":{"owner":"web"},"Check":{"HTTP":"http://x/health","Interval":"10s"}}`, ""},
		{"lower-case fields", `{"name":"api","meta":{"owner":"web"}}`, ""},
		{"catalog ok", `{"Node":"n1","Address":"10.0.0.1","Service":{"Service":"api","Meta":{"owner":"web"}},
			"Check":{"Name":"c","Status":"passing"}}`, ""},
		{"bad name", `{"Name":"API","Meta":{"owner":"web"}}`,
			`registration: service name "API" does not match ^[a-z][a-z0-9-]*$`},
		{"catalog bad name", `{"Service":{"Service":"a_b","Meta":{"owner":"web"}}}`,
			`registration: service name "a_b" does not match ^[a-z][a-z0-9-]*$`},
		{"no name", `{"Meta":{"owner":"web"}}`, "registration: registration names no service (Name, or Service.Service)"},
		{"catalog no name", `{"Service":{"ID":"x","Meta":{"owner":"web"}}}`, "registration: Service.Service is missing"},
		{"no owner", `{"Name":"api"}`,
			`registration: service "api" has no Meta.owner (want "web", the caller's SPIFFE ID's last path segment)`},
		{"other owner", `{"Name":"api","Meta":{"owner":"db"}}`,
			`registration: service "api": Meta.owner is "db", want "web" (the caller's SPIFFE ID's last path segment)`},
		{"catalog other owner", `{"Service":{"Service":"api","Meta":{"owner":"db"}}}`,
			`registration: service "api": Service.Meta.owner is "db", want "web" (the caller's SPIFFE ID's last path segment)`},
		{"owner case", `{"Name":"api","Meta":{"Owner":"web"}}`,
			`registration: service "api" has no Meta.owner (want "web", the caller's SPIFFE ID's last path segment)`},
		{"script check", `{"Name":"api","Meta":{"owner":"web"},"Check":{"Name":"disk","Args":["/bin/df"],"Interval":"10s"}}`,
			`registration: Check ("disk") is a script check (Args): script checks are not allowed`},
		{"script checks", `{"Name":"api","Meta":{"owner":"web"},"Checks":[{"TTL":"5s"},{"ScriptArgs":["sh","-c","x"]}]}`,
			`registration: Checks[1] ("") is a script check (ScriptArgs): script checks are not allowed`},
		{"snake case script", `{"Name":"api","Meta":{"owner":"web"},"Checks":[{"script_args":["sh"]}]}`,
			`registration: Checks[0] ("") is a script check (ScriptArgs): script checks are not allowed`},
		{"sidecar script", `{"Name":"api","Meta":{"owner":"web"},"Connect":{"SidecarService":{"Checks":[{"Args":["x"]}]}}}`,
			`registration: Connect.SidecarService.Checks[0] ("") is a script check (Args): script checks are not allowed`},
		{"empty args", `{"Name":"api","Meta":{"owner":"web"},"Check":{"Args":[],"TTL":"5s"}}`, ""},
		{"duplicate name", `{"Name":"api","name":"BAD","Meta":{"owner":"web"}}`,
			`registration: registration is not a JSON object: field "name" appears twice`},
		{"duplicate owner", `{"Name":"api","Meta":{"owner":"web","owner":"db"}}`,
			`registration: Meta: field "owner" appears twice`},
		{"not JSON", `{"Name":`, "registration: registration is not a JSON object: unexpected EOF"},
		{"array", `[]`, "registration: registration is not a JSON object: not a JSON object"},
		{"trailing", `{"Name":"api","Meta":{"owner":"web"}} {}`,
			"registration: registration is not a JSON object: data after the JSON object"},
		{"name not a string", `{"Name":1}`, "registration: Name is not a string"},
	}
	for _, c := range cases {
		if got := judge(t, register(sdk.ResourceService, web, c.body)); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// TestCheckRegistration checks that a check registration may not run a
// script.
func TestCheckRegistration(t *testing.T) {
	if err := configure([]byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := judge(t, register(sdk.ResourceCheck, web, `{"Name":"mem","TTL":"10s"}`)); got != "" {
		t.Errorf("TTL check: %q", got)
	}
	if got := judge(t, register(sdk.ResourceCheck, web, `{"Name":"mem","Args":["free"],"Interval":"5s"}`)); got !=
		`registration: check ("mem") is a script check (Args): script checks are not allowed` {
		t.Errorf("script check: %q", got)
	}
}

// TestOwnerModes checks the spiffe-id mode, a custom pattern and callers
// without a usable SPIFFE path.
func TestOwnerModes(t *testing.T) {
	t.Cleanup(func() {
		if err := configure([]byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	})
	if err := configure([]byte(`{"owner":"spiffe-id","name_pattern":"^team-[a-z]+$"}`)); err != nil {
		t.Fatal(err)
	}
	if got := judge(t, register(sdk.ResourceService, web, `{"Name":"team-a","Meta":{"owner":"`+web+`"}}`)); got != "" {
		t.Errorf("spiffe-id owner: %q", got)
	}
	if got := judge(t, register(sdk.ResourceService, web, `{"Name":"team-a","Meta":{"owner":"web"}}`)); got == "" {
		t.Error("spiffe-id mode accepted the last segment")
	}
	if got := judge(t, register(sdk.ResourceService, web, `{"Name":"api","Meta":{"owner":"`+web+`"}}`)); got !=
		`registration: service name "api" does not match ^team-[a-z]+$` {
		t.Errorf("custom pattern: %q", got)
	}
	if err := configure([]byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := judge(t, register(sdk.ResourceService, "spiffe://example.org", `{"Name":"api"}`)); got == "" {
		t.Error("a caller without a path was accepted")
	}
}

// TestScope checks that other ops continue and a missing body is denied.
func TestScope(t *testing.T) {
	if err := configure([]byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	dereg := &sdk.Op{Resource: sdk.ResourceService, Action: sdk.ActionDeregister, Caller: []byte(web)}
	put := &sdk.Op{Resource: sdk.ResourceKV, Action: sdk.ActionWrite, Flags: sdk.FlagValue, Key: []byte("/k"), Value: []byte("x")}
	for _, op := range []*sdk.Op{dereg, put} {
		if got := judge(t, op); got != "" {
			t.Errorf("%v/%v: %q", op.Resource, op.Action, got)
		}
	}
	if got := judge(t, &sdk.Op{Resource: sdk.ResourceService, Action: sdk.ActionRegister, Caller: []byte(web)}); got !=
		"registration: no registration body" {
		t.Errorf("no body: %q", got)
	}
}

// TestConfigErrors checks that a bad configuration refuses the plugin.
func TestConfigErrors(t *testing.T) {
	t.Cleanup(func() { _ = configure([]byte(`{}`)) })
	for _, cfg := range []string{`{"name_pattern":"("}`, `{"owner":"name"}`, `{"pattern":"x"}`} {
		if err := configure([]byte(cfg)); err == nil {
			t.Errorf("%s: accepted", cfg)
		}
	}
}
