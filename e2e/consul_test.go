package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/internal/testenv"
)

// consulAgent is a real Consul 1.14.11 agent (testenv) in -dev mode on
// loopback.
type consulAgent struct {
	*testenv.Consul
	httpAddr string
	logs     procLogs
}

// consulBin is bin/consul, built when missing.
func consulBin(t *testing.T) string {
	t.Helper()
	bin, err := testenv.Tool("consul")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// port is a free loopback port.
func port(t *testing.T) string {
	t.Helper()
	p, err := testenv.Port()
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(p)
}

// startConsul starts an agent with the extra flags; it stops when the test
// ends.
func startConsul(t *testing.T, extra ...string) *consulAgent {
	t.Helper()
	c := testenv.New(t).Consul(testenv.ConsulSpec{Node: "storegate-e2e", Args: extra})
	return &consulAgent{Consul: c, httpAddr: c.HTTPAddr, logs: procLogs{c.Proc}}
}

// start runs the stopped agent again (-dev: empty) and waits until it has
// a leader.
func (a *consulAgent) start(t *testing.T) {
	t.Helper()
	if err := a.Proc.Start(); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitReady(t.Context(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

// stop ends the agent (SIGTERM, SIGKILL after 15s).
func (a *consulAgent) stop() { a.Proc.Stop(15 * time.Second) }

// consulCLI runs the consul CLI against addr (http://... direct, or
// https://... through the gateway as caller who).
type consulCLI struct {
	p     *pki
	addr  string
	who   string
	token string // CONSUL_HTTP_TOKEN, if any
}

func (c consulCLI) run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot, "bin", "consul"), args...)
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR="+c.addr)
	if c.token != "" {
		cmd.Env = append(cmd.Env, "CONSUL_HTTP_TOKEN="+c.token)
	}
	if strings.HasPrefix(c.addr, "https://") {
		cmd.Env = append(cmd.Env, "CONSUL_CACERT="+c.p.bundle(),
			"CONSUL_CLIENT_CERT="+c.p.path(c.who+".pem"), "CONSUL_CLIENT_KEY="+c.p.path(c.who+"-key.pem"))
	}
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// consulTokens is the Consul upstream's token_file and
// forward_caller_tokens.
type consulTokens struct {
	file    string
	forward bool
}

// gatewayWithConsul starts a gateway with the Consul front alone (no etcd
// listener or upstream: ec is not used), so that every Consul e2e test also
// shows that a Consul-only gateway serves.
func gatewayWithConsul(t *testing.T, p *pki, ec *etcdCluster, ca *consulAgent, policyDir string, tokens ...consulTokens) (*gateway, string) {
	t.Helper()
	consulAddr := freePort(t)
	o := gatewayOpts{policyDir: policyDir, consulListen: consulAddr, consulUpstream: "http://" + ca.httpAddr, consulOnly: true}
	for _, tk := range tokens {
		o.consulTokenFile, o.consulForwardTokens = tk.file, tk.forward
	}
	gw := startGateway(t, p, ec, o)
	return gw, "https://" + consulAddr
}

var consulSteps = []step{
	{name: "put", args: "kv put {p}/a 1"},
	{name: "put-flags", args: "kv put -flags=42 {p}/b 2"},
	{name: "put-nested", args: "kv put {p}/dir/c 3"},
	{name: "get", args: "kv get {p}/a"},
	{name: "get-detailed", args: "kv get -detailed {p}/b"},
	{name: "get-missing", args: "kv get {p}/missing", fails: true},
	{name: "get-recurse", args: "kv get -recurse {p}/"},
	{name: "get-keys", args: "kv get -keys {p}/"},
	{name: "get-keys-separator", args: "kv get -keys -separator= {p}/"},
	{name: "export", args: "kv export {p}/"},
	{name: "import", stdin: `[{"key":"{p}/imported","flags":7,"value":"aW1wb3J0ZWQ="}]`, args: "kv import -"},
	{name: "get-imported", args: "kv get -detailed {p}/imported"},
	{name: "cas-fail", args: "kv put -cas -modify-index=1 {p}/a 9", fails: true},
	{name: "delete", args: "kv delete {p}/a"},
	{name: "delete-recurse", args: "kv delete -recurse {p}/dir"},
	{name: "get-after-delete", args: "kv get -recurse {p}/"},
}

// TestConsulKVSameThroughGateway runs the consul CLI's KV commands direct
// to a real Consul agent and through the gateway (allow-all policy).
func TestConsulKVSameThroughGateway(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, "")
	run := func(c consulCLI, prefix string) map[string]string {
		out := map[string]string{}
		for _, s := range consulSteps {
			args := strings.ReplaceAll(s.args, "{p}", prefix)
			stdout, stderr, err := c.run(t, strings.ReplaceAll(s.stdin, "{p}", prefix), strings.Fields(args)...)
			if (err != nil) != s.fails {
				t.Errorf("%s (%s): err=%v want failure %v\n%s%s", s.name, args, err, s.fails, stdout, stderr)
			}
			got := stdout
			if err != nil {
				got += "\nERR: " + stderr
			}
			out[s.name] = maskConsul(strings.ReplaceAll(got, prefix, "P"))
		}
		return out
	}
	direct := run(consulCLI{addr: "http://" + agent.httpAddr}, "cmp-d")
	through := run(consulCLI{p: p, addr: gwAddr, who: "admin"}, "cmp-g")
	for _, s := range consulSteps {
		if direct[s.name] != through[s.name] {
			t.Errorf("%s: output differs\n--- direct ---\n%s\n--- through storegate ---\n%s", s.name, direct[s.name], through[s.name])
		} else {
			t.Logf("%-20s same: %q", s.name, firstLine(through[s.name]))
		}
	}
}

func maskConsul(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && (f[0] == "CreateIndex" || f[0] == "ModifyIndex" || f[0] == "LockIndex") {
			if _, err := strconv.Atoi(f[1]); err == nil {
				l = f[0] + " N\n"
			}
		}
		b.WriteString(l)
	}
	return b.String()
}

// TestConsulRestrictive drives the consul CLI as web under the shipped
// intentions.
func TestConsulRestrictive(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, restrictivePolicy(t))
	direct := consulCLI{addr: "http://" + agent.httpAddr}
	web := consulCLI{p: p, addr: gwAddr, who: "web"}
	for _, kv := range [][2]string{{"app/secret/token", "s3cr3t"}, {"app/visible", "v"}, {"other/x", "o"}} {
		if _, stderr, err := direct.run(t, "", "kv", "put", kv[0], kv[1]); err != nil {
			t.Fatal(stderr)
		}
	}
	const denied = "Unexpected response code: 403 (Permission denied: "
	cases := []struct {
		name    string
		args    []string
		want    string
		wantErr bool
		notWant string
	}{
		{"put allowed", []string{"kv", "put", "app/x", "1"}, "Success! Data written to: app/x", false, ""},
		{"get allowed", []string{"kv", "get", "app/x"}, "1", false, ""},
		{"put elsewhere", []string{"kv", "put", "other/y", "2"}, denied + `no intention allows spiffe://example.org/web to write kv "/other/y")`, true, ""},
		{"get secret", []string{"kv", "get", "app/secret/token"}, denied + `deny intention "web-no-secrets" matches)`, true, ""},
		{"recurse is filtered", []string{"kv", "get", "-recurse", "app/"}, "app/visible:v", false, "secret"},
		{"keys are filtered", []string{"kv", "get", "-keys", "app/"}, "app/visible", false, "secret"},
		{"delete a partly denied tree", []string{"kv", "delete", "-recurse", "app/"}, denied, true, ""},
		{"route not forwarded", []string{"operator", "raft", "list-peers"}, "403 (Permission denied: GET /v1/operator/raft/configuration is not a route storegate forwards)", true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, err := web.run(t, "", c.args...)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error %v\nstdout: %s\nstderr: %s", err, c.wantErr, stdout, stderr)
			}
			where := stdout
			if c.wantErr {
				where = stderr
			}
			if !strings.Contains(where, c.want) {
				t.Errorf("want %q in\n%s", c.want, where)
			}
			if c.notWant != "" && strings.Contains(stdout, c.notWant) {
				t.Errorf("%q leaked:\n%s", c.notWant, stdout)
			}
		})
	}
	if out, _, _ := direct.run(t, "", "kv", "get", "other/y"); out != "" {
		t.Errorf("a denied put reached Consul: %q", out)
	}
}

// TestConsulTokenInjection: against an agent with ACLs on (default deny) the
// gateway sends its own token; callers need none, and a token a caller sends
// is stripped rather than forwarded.
func TestConsulTokenInjection(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	const root = "3e1b2f7c-0d5a-4b8e-9c41-6f2a8d9e0b17"
	agent := startConsul(t, "-hcl", `acl { enabled = true default_policy = "deny" tokens { initial_management = "`+root+`" } }`)
	tokenFile := filepath.Join(t.TempDir(), "consul-token")
	if err := os.WriteFile(tokenFile, []byte(root+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, "", consulTokens{file: tokenFile})

	direct := consulCLI{addr: "http://" + agent.httpAddr}
	if _, stderr, err := direct.run(t, "", "kv", "put", "acl/x", "1"); err == nil || !strings.Contains(stderr, "403") {
		t.Fatalf("the agent accepted a write without a token: err=%v %s", err, stderr)
	}
	through := consulCLI{p: p, addr: gwAddr, who: "admin"}
	if out, stderr, err := through.run(t, "", "kv", "put", "acl/x", "1"); err != nil {
		t.Fatalf("through the gateway: %v %s", err, stderr)
	} else if !strings.Contains(out, "Success!") {
		t.Errorf("put: %q", out)
	}
	// A caller's own (bogus) token is not forwarded: the gateway's is used.
	through.token = "00000000-0000-0000-0000-000000000000"
	if out, stderr, err := through.run(t, "", "kv", "get", "acl/x"); err != nil || out != "1\n" {
		t.Fatalf("get with a caller token: %q %v %s", out, err, stderr)
	}
	direct.token = root
	if out, _, err := direct.run(t, "", "kv", "get", "acl/x"); err != nil || out != "1\n" {
		t.Errorf("direct with the root token: %q %v", out, err)
	}

	// With forward_caller_tokens the caller's token goes on to Consul (whose
	// ACLs then judge it after policy); callers without one get the gateway's.
	_, fwdAddr := gatewayWithConsul(t, p, ec, agent, "", consulTokens{file: tokenFile, forward: true})
	fwd := consulCLI{p: p, addr: fwdAddr, who: "admin", token: "00000000-0000-0000-0000-000000000000"}
	if _, stderr, err := fwd.run(t, "", "kv", "get", "acl/x"); err == nil || !strings.Contains(stderr, "403") || !strings.Contains(stderr, "ACL not found") {
		t.Errorf("a bogus caller token, forwarded: err=%v %s", err, stderr)
	}
	fwd.token = root
	if out, stderr, err := fwd.run(t, "", "kv", "get", "acl/x"); err != nil || out != "1\n" {
		t.Errorf("the caller's root token, forwarded: %q %v %s", out, err, stderr)
	}
	fwd.token = ""
	if out, stderr, err := fwd.run(t, "", "kv", "get", "acl/x"); err != nil || out != "1\n" {
		t.Errorf("no caller token: the gateway's is sent: %q %v %s", out, err, stderr)
	}
}

// TestConsulAgentRestart: the agent restarts under a running gateway; the
// gateway needs no restart.
func TestConsulAgentRestart(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	agent := startConsul(t)
	_, gwAddr := gatewayWithConsul(t, p, ec, agent, "")
	through := consulCLI{p: p, addr: gwAddr, who: "admin"}
	if _, stderr, err := through.run(t, "", "kv", "put", "restart/a", "1"); err != nil {
		t.Fatal(stderr)
	}
	agent.stop()
	if _, stderr, err := through.run(t, "", "kv", "get", "restart/a"); err == nil || !strings.Contains(stderr, "502") {
		t.Errorf("with the agent down: err=%v %s", err, stderr)
	}
	agent.start(t) // -dev keeps nothing: the key is gone, the gateway is not
	if out, stderr, err := through.run(t, "", "kv", "put", "restart/b", "2"); err != nil || !strings.Contains(out, "Success!") {
		t.Fatalf("after the restart: %v %s%s", err, out, stderr)
	}
	if out, _, err := through.run(t, "", "kv", "get", "restart/b"); err != nil || out != "2\n" {
		t.Errorf("get after the restart: %q %v", out, err)
	}
}
