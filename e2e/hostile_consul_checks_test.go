package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hcnTarget is a check and the service it is attached to.
type hcnTarget struct {
	name   string
	addr   string         // the service's Address
	port   int            // the service's Port
	tagged string         // the service's TaggedAddresses (JSON), if any
	check  map[string]any // the check's own fields
	kind   string         // Consul's Type for the check, when it is allowed
}

// hcnPlace is where a registration nests a check.
type hcnPlace struct {
	name string
	// attach: the check goes on an existing service (pre-registered, ID
	// pre); catalog: into the catalog only, as a HealthCheck definition.
	attach, catalog bool
	build           func(t *testing.T, id, pre string, tg hcnTarget) (path, body string)
}

func hcnService(id string, tg hcnTarget) map[string]any {
	s := map[string]any{"Name": id, "ID": id, "Address": tg.addr, "Port": tg.port}
	if tg.tagged != "" {
		s["TaggedAddresses"] = rawJSON(tg.tagged)
	}
	return s
}

type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

// hcnDefinition is a check as the catalog's HealthCheck spells it (nil if
// it has no such spelling, as H2PING).
func hcnDefinition(chk map[string]any) map[string]any {
	d := map[string]any{}
	for k, v := range chk {
		switch k {
		case "HTTP", "TCP", "UDP", "GRPC", "Interval", "Header", "Method", "Body":
			d[k] = v
		default:
			return nil
		}
	}
	return d
}

func hcnCatalogCheck(id, pre string, def map[string]any) map[string]any {
	return map[string]any{"Node": hcnNode, "CheckID": id, "Name": id, "ServiceID": pre, "Status": "critical", "Definition": def}
}

var hcnPlaces = []hcnPlace{
	{name: "Check", build: func(t *testing.T, id, _ string, tg hcnTarget) (string, string) {
		s := hcnService(id, tg)
		s["Check"] = tg.check
		return "/v1/agent/service/register", hcnJSON(t, s)
	}},
	{name: "Checks[1]", build: func(t *testing.T, id, _ string, tg hcnTarget) (string, string) {
		s := hcnService(id, tg)
		s["Checks"] = []any{map[string]any{"TTL": "30s"}, tg.check}
		return "/v1/agent/service/register", hcnJSON(t, s)
	}},
	{name: "sidecar Check", build: func(t *testing.T, id, _ string, tg hcnTarget) (string, string) {
		s := hcnService(id, tg)
		s["Connect"] = map[string]any{"SidecarService": map[string]any{"Address": tg.addr, "Port": tg.port, "Check": tg.check}}
		return "/v1/agent/service/register", hcnJSON(t, s)
	}},
	{name: "sidecar Checks[1]", build: func(t *testing.T, id, _ string, tg hcnTarget) (string, string) {
		s := hcnService(id, tg)
		s["Connect"] = map[string]any{"SidecarService": map[string]any{"Address": tg.addr, "Port": tg.port,
			"Checks": []any{map[string]any{"TTL": "30s"}, tg.check}}}
		return "/v1/agent/service/register", hcnJSON(t, s)
	}},
	{name: "check register", attach: true, build: func(t *testing.T, id, pre string, tg hcnTarget) (string, string) {
		c := map[string]any{"ID": id, "Name": id, "ServiceID": pre}
		for k, v := range tg.check {
			c[k] = v
		}
		return "/v1/agent/check/register", hcnJSON(t, c)
	}},
	{name: "catalog Checks[1]", attach: true, catalog: true, build: func(t *testing.T, id, pre string, tg hcnTarget) (string, string) {
		return "/v1/catalog/register", hcnJSON(t, map[string]any{"Node": hcnNode, "Address": "127.0.0.1", "SkipNodeUpdate": true,
			"Checks": []any{hcnCatalogCheck(id+"-ok", pre, map[string]any{}), hcnCatalogCheck(id, pre, hcnDefinition(tg.check))}})
	}},
	{name: "txn Check", attach: true, catalog: true, build: func(t *testing.T, id, pre string, tg hcnTarget) (string, string) {
		return "/v1/txn", hcnJSON(t, []any{map[string]any{"Check": map[string]any{"Verb": "set",
			"Check": hcnCatalogCheck(id, pre, hcnDefinition(tg.check))}}})
	}},
}

// TestHostileConsulCheckTargets: class 3, indirect effects. A health check
// makes the agent connect to its target and shows the answer in the check's
// output, so the target is part of the decision: under the shipped policy a
// check may only aim at its own service's address and port. Checks aimed at
// the Consul agent's HTTP port, etcd, the gateway's own listeners, link-local
// and metadata addresses, another port or host, are denied in every place a
// registration nests a check (service Check and Checks, the sidecar's Check
// and Checks, check register, catalog register, txn), also when the service
// itself claims the forbidden address and port, also under other spellings
// of the host (127.1, 0x7f000001, [::ffff:127.0.0.1], LOCALHOST, userinfo,
// a URL without a port...). A denial leaves nothing in the agent or the
// catalog; checks on the service's own address and port are still allowed.
func TestHostileConsulCheckTargets(t *testing.T) {
	e := hcnStart(t)
	hp := func(addr string) (string, int) {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(p)
		return h, n
	}
	_, CP := hp(e.agent.httpAddr)
	etcdHost := strings.TrimPrefix(e.ec.endpoints[0], "https://")
	_, EP := hp(etcdHost)
	_, GP := hp(e.gw.addr)
	frontHost := strings.TrimPrefix(e.front, "https://")
	_, FP := hp(frontHost)
	_, AP := hp(e.gw.admin)
	P := hcnPort(t)
	cp, p := strconv.Itoa(CP), strconv.Itoa(P)
	ck := func(kv ...string) map[string]any {
		m := map[string]any{"Interval": "10s"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	own := func(name string, chk map[string]any) hcnTarget {
		return hcnTarget{name: name, addr: "127.0.0.1", port: P, check: chk}
	}
	claims := func(name, addr string, port int, chk map[string]any) hcnTarget {
		return hcnTarget{name: name, addr: addr, port: port, check: chk}
	}

	// Targets off loopback are chosen to reach nothing if a check is
	// wrongly let through: TEST-NET-1, .invalid, a TCP connect (no request)
	// to the metadata address, HTTP only to other link-local addresses.
	denied := []hcnTarget{
		own("HTTP to the Consul agent", ck("HTTP", "http://127.0.0.1:"+cp+"/v1/kv/?recurse")),
		own("TCP to the Consul agent", ck("TCP", "127.0.0.1:"+cp)),
		own("UDP to the Consul agent", ck("UDP", "127.0.0.1:"+cp)),
		own("gRPC to the Consul agent", ck("GRPC", "127.0.0.1:"+cp)),
		own("gRPC to the Consul agent, with a service", ck("GRPC", "localhost:"+cp+"/grpc.health.v1.Health")),
		own("H2PING to the Consul agent", ck("H2PING", "127.0.0.1:"+cp)),
		own("HTTP to etcd", ck("HTTP", e.ec.endpoints[0]+"/version")),
		own("TCP to etcd", ck("TCP", etcdHost)),
		own("TCP to the gateway's etcd front", ck("TCP", e.gw.addr)),
		own("HTTP to the gateway's Consul front", ck("HTTP", e.front+"/v1/kv/app/?recurse")),
		own("HTTP to the gateway's admin", ck("HTTP", "http://"+e.gw.admin+"/metrics")),
		own("HTTP to 169.254.1.1", ck("HTTP", "http://169.254.1.1/latest/meta-data/")),
		own("TCP to 169.254.169.254:80", ck("TCP", "169.254.169.254:80")),
		own("HTTP to [fe80::1], the service's port", ck("HTTP", "http://[fe80::1]:"+p+"/")),
		own("TCP to [fe80::1%lo], the service's port", ck("TCP", "[fe80::1%lo]:"+p)),
		own("HTTP to metadata.google.internal", ck("HTTP", "http://metadata.google.internal/computeMetadata/v1/")),
		own("HTTP to METADATA.GOOGLE.INTERNAL.", ck("HTTP", "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/")),
		own("TCP to another port", ck("TCP", "127.0.0.1:"+strconv.Itoa(P+1))),
		own("TCP to another host, the service's port", ck("TCP", "192.0.2.1:"+p)),
		own("HTTP to another host, the service's port", ck("HTTP", "http://host.invalid:"+p+"/")),
		own("HTTP with no port (80)", ck("HTTP", "http://127.0.0.1/health")),
		own("HTTPS with no port (443)", ck("HTTP", "https://localhost/health")),
		own("HTTP, userinfo spelled like the service", ck("HTTP", "http://127.0.0.1:"+p+"@127.0.0.1:"+cp+"/v1/agent/self")),
		own("HTTP, userinfo x@", ck("HTTP", "http://x@127.0.0.1:"+cp+"/v1/agent/self")),
		own("TCP, port with a leading zero", ck("TCP", "127.0.0.1:0"+cp)),
		own("HTTP with a Host header of the service", map[string]any{"HTTP": "http://127.0.0.1:" + cp + "/v1/agent/self",
			"Header": map[string][]string{"Host": {"127.0.0.1:" + p}}, "Interval": "10s"}),

		claims("service at the Consul agent's port, TCP", "127.0.0.1", CP, ck("TCP", "127.0.0.1:"+cp)),
		claims("service at the Consul agent's port, HTTP", "127.0.0.1", CP, ck("HTTP", "http://127.0.0.1:"+cp+"/v1/agent/self")),
		claims("service at the Consul agent's port, no address, HTTP localhost", "", CP, ck("HTTP", "http://localhost:"+cp+"/v1/agent/self")),
		claims("service at the Consul agent's port, gRPC", "127.0.0.1", CP, ck("GRPC", "127.0.0.1:"+cp)),
		claims("service at 127.1 and the Consul agent's port", "127.1", CP, ck("TCP", "127.1:"+cp)),
		claims("service at ::1 and the Consul agent's port", "::1", CP, ck("HTTP", "http://[::1]:"+cp+"/v1/agent/self")),
		claims("service at etcd", "127.0.0.1", EP, ck("HTTP", "https://127.0.0.1:"+strconv.Itoa(EP)+"/version")),
		claims("service at the gateway's etcd front", "127.0.0.1", GP, ck("TCP", "127.0.0.1:"+strconv.Itoa(GP))),
		claims("service at the gateway's Consul front", "127.0.0.1", FP, ck("HTTP", "https://127.0.0.1:"+strconv.Itoa(FP)+"/v1/kv/")),
		claims("service at the gateway's admin", "127.0.0.1", AP, ck("HTTP", "http://127.0.0.1:"+strconv.Itoa(AP)+"/metrics")),
		claims("service at 169.254.169.254:80", "169.254.169.254", 80, ck("TCP", "169.254.169.254:80")),
		claims("service at 169.254.1.1:80", "169.254.1.1", 80, ck("HTTP", "http://169.254.1.1/")),
		claims("service at [fe80::1]:80", "fe80::1", 80, ck("TCP", "[fe80::1]:80")),
		claims("service at metadata.google.internal:80", "metadata.google.internal", 80, ck("HTTP", "http://metadata.google.internal/computeMetadata/v1/")),
		{name: "tagged address at the Consul agent", addr: "127.0.0.1", port: P,
			tagged: fmt.Sprintf(`{"lan":{"Address":"127.0.0.1","Port":%d}}`, CP), check: ck("TCP", "127.0.0.1:"+cp)},
	}
	for _, h := range []string{"127.1", "0x7f000001", "2130706433", "0177.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0", "localhost.", "LOCALHOST"} {
		denied = append(denied,
			own("TCP to the Consul agent as "+h, ck("TCP", h+":"+cp)),
			own("HTTP to the Consul agent as "+h, ck("HTTP", "http://"+h+":"+cp+"/v1/agent/self")))
	}
	allowed := []hcnTarget{
		{name: "HTTP to its own port", addr: "127.0.0.1", port: P, check: ck("HTTP", "http://127.0.0.1:"+p+"/health"), kind: "http"},
		{name: "HTTP to localhost, its own port", addr: "127.0.0.1", port: P, check: ck("HTTP", "http://localhost:"+p+"/health"), kind: "http"},
		{name: "TCP to its own port", addr: "127.0.0.1", port: P, check: ck("TCP", "127.0.0.1:"+p), kind: "tcp"},
		{name: "TCP to localhost, its own port", addr: "127.0.0.1", port: P, check: ck("TCP", "localhost:"+p), kind: "tcp"},
		{name: "gRPC to its own port", addr: "127.0.0.1", port: P, check: ck("GRPC", "127.0.0.1:"+p), kind: "grpc"},
		{name: "H2PING to its own port", addr: "127.0.0.1", port: P, check: ck("H2PING", "127.0.0.1:"+p), kind: "h2ping"},
		{name: "no address, TCP to 127.0.0.1", addr: "", port: P, check: ck("TCP", "127.0.0.1:"+p), kind: "tcp"},
		{name: "no address, HTTP to localhost", addr: "", port: P, check: ck("HTTP", "http://localhost:"+p+"/"), kind: "http"},
		{name: "service at 80, HTTP with no port", addr: "127.0.0.1", port: 80, check: ck("HTTP", "http://127.0.0.1/health"), kind: "http"},
		{name: "service at 443, HTTPS with no port", addr: "127.0.0.1", port: 443, check: ck("HTTP", "https://localhost/health"), kind: "http"},
	}

	// The services that check register, catalog register and txn attach
	// checks to: web's, registered directly, one per target.
	pre := func(group string, i int) string { return fmt.Sprintf("web-own-%s%d", group, i) }
	for group, list := range map[string][]hcnTarget{"d": denied, "a": allowed} {
		for i, tg := range list {
			e.put(t, "/v1/agent/service/register", hcnJSON(t, hcnService(pre(group, i), tg)))
		}
	}
	e.settle(t)
	base := e.snap(t)

	for j, pl := range hcnPlaces {
		for i, tg := range denied {
			if pl.catalog && hcnDefinition(tg.check) == nil {
				continue // the catalog's HealthCheck has no field for it
			}
			t.Run("denied/"+pl.name+"/"+tg.name, func(t *testing.T) {
				id := fmt.Sprintf("web-t%d-%d", j, i)
				path, body := pl.build(t, id, pre("d", i), tg)
				before := e.snap(t)
				code, out := e.as(t, e.web, "PUT", path, body)
				hcnDenied(t, path+" "+body, code, out)
				e.nothingNew(t, "the denied registration", before)
				if t.Failed() {
					e.undo(t, base, nil)
				}
			})
		}
	}
	for j, pl := range hcnPlaces {
		if pl.catalog {
			continue // web has no node rights; the catalog's checks are not run
		}
		for i, tg := range allowed {
			t.Run("allowed/"+pl.name+"/"+tg.name, func(t *testing.T) {
				id := fmt.Sprintf("web-ok%d-%d", j, i)
				path, body := pl.build(t, id, pre("a", i), tg)
				if code, out := e.as(t, e.web, "PUT", path, body); code != http.StatusOK {
					t.Fatalf("%s %s: %d %s", path, body, code, out)
				}
				svcs, checks := e.agentServices(t), e.agentChecks(t)
				owner := id
				switch {
				case pl.attach:
					owner = pre("a", i)
				case strings.HasPrefix(pl.name, "sidecar"):
					owner = id + "-sidecar-proxy"
				}
				if _, ok := svcs[owner]; !ok {
					t.Errorf("service %s is not in the agent", owner)
				}
				found := false
				for _, c := range checks {
					if c.ServiceID == owner && c.Type == tg.kind {
						found = true
					}
				}
				if !found {
					t.Errorf("no %s check on %s in the agent", tg.kind, owner)
				}
			})
		}
	}
}

// TestHostileConsulScriptChecks: class 3, a script check runs a command on
// the agent's host. Against an agent with script checks enabled (and shown
// to run them), a script or Docker check is denied wherever it sits: a
// service's Check or Checks, its sidecar's Check or Checks, check register
// on web's own service or on the node, beside an HTTP target, in catalog
// register and txn Check ops (by Type, the catalog's spelling), in spellings
// of ScriptArgs Go reads case-insensitively or Consul reads as aliases, in
// duplicated keys. Each script would touch a file of its own: none may
// appear, and no such check or service may be in the agent or the catalog.
func TestHostileConsulScriptChecks(t *testing.T) {
	e := hcnStart(t, "-hcl", "enable_script_checks = true")
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Fatalf("touch (coreutils) is needed to show a script check would run: %v", err)
	}
	dir := t.TempDir()
	P := hcnPort(t)
	e.put(t, "/v1/agent/service/register", fmt.Sprintf(`{"Name":"web-base","Address":"127.0.0.1","Port":%d,"Check":{"TTL":"10m"}}`, P))

	// The control: the agent runs a script check registered directly.
	ctrl := filepath.Join(dir, "control")
	e.put(t, "/v1/agent/check/register", hcnJSON(t, map[string]any{"ID": "control", "Name": "control",
		"ScriptArgs": []string{touch, ctrl}, "Interval": "1s"}))
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(ctrl); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not run a script check in 20s:\n%s", e.agent.logs.String())
		}
	}
	e.put(t, "/v1/agent/check/deregister/control", "")
	e.settle(t)

	files := map[string]string{}
	args := func(name string) string {
		f := filepath.Join(dir, name)
		files[name] = f
		return hcnJSON(t, []string{touch, f})
	}
	svcOp := `{"Service":{"Verb":"set","Node":"` + hcnNode + `","Service":{"ID":"%s","Service":"%s","Port":%d}}}`
	catChk := func(id, typ string) string {
		return fmt.Sprintf(`{"Node":%q,"CheckID":%q,"Name":%q,"ServiceID":"web-base","Type":%q,"Status":"passing"}`, hcnNode, id, id, typ)
	}
	cases := []struct {
		name, path, body string
		strict           bool // a 403 denial, not merely a refusal
		// dropOK: the catalog's HealthCheck definition has no ScriptArgs;
		// a gateway that drops the field (Consul's api type ignores it)
		// and forwards a check without it is also safe.
		dropOK bool
	}{
		{"Check", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s1","Port":%d,"Check":{"ScriptArgs":%s,"Interval":"1s"}}`, P, args("s1")), true, false},
		{"Checks[1]", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s2","Port":%d,"Checks":[{"TTL":"30s"},{"ScriptArgs":%s,"Interval":"1s"}]}`, P, args("s2")), true, false},
		{"Checks[2], after HTTP and TCP checks on its own port", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s3","Address":"127.0.0.1","Port":%d,"Checks":[{"HTTP":"http://127.0.0.1:%d/","Interval":"10s"},{"TCP":"127.0.0.1:%d","Interval":"10s"},{"ScriptArgs":%s,"Interval":"1s"}]}`, P, P, P, args("s3")), true, false},
		{"sidecar Check", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s4","Port":%d,"Connect":{"SidecarService":{"Check":{"ScriptArgs":%s,"Interval":"1s"}}}}`, P, args("s4")), true, false},
		{"sidecar Checks[1]", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s5","Port":%d,"Connect":{"SidecarService":{"Name":"web-s5-envoy","Checks":[{"TTL":"30s"},{"ScriptArgs":%s,"Interval":"1s"}]}}}`, P, args("s5")), true, false},
		{"check register on web's service", "/v1/agent/check/register",
			fmt.Sprintf(`{"Name":"web-s6","ServiceID":"web-base","ScriptArgs":%s,"Interval":"1s"}`, args("s6")), true, false},
		{"check register on the node", "/v1/agent/check/register",
			fmt.Sprintf(`{"Name":"web-s7","ScriptArgs":%s,"Interval":"1s"}`, args("s7")), true, false},
		{"script args beside an HTTP target", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s8","Port":%d,"Check":{"HTTP":"http://127.0.0.1:%d/","ScriptArgs":%s,"Interval":"1s"}}`, P, P, args("s8")), true, false},
		{"script args beside a TTL", "/v1/agent/check/register",
			fmt.Sprintf(`{"Name":"web-s9","ServiceID":"web-base","TTL":"30s","ScriptArgs":%s}`, args("s9")), true, false},
		{"Docker in Check", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s10","Port":%d,"Check":{"DockerContainerID":"storegate-e2e","Shell":"/bin/sh","ScriptArgs":%s,"Interval":"1s"}}`, P, args("s10")), true, false},
		{"Docker in sidecar Checks[1]", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s11","Port":%d,"Connect":{"SidecarService":{"Checks":[{"TTL":"30s"},{"DockerContainerID":"storegate-e2e","ScriptArgs":%s,"Interval":"1s"}]}}}`, P, args("s11")), true, false},
		{"Docker by check register", "/v1/agent/check/register",
			fmt.Sprintf(`{"Name":"web-s12","ServiceID":"web-base","DockerContainerID":"storegate-e2e","ScriptArgs":%s,"Interval":"1s"}`, args("s12")), true, false},
		{"scriptargs, lower case", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s13","Port":%d,"Check":{"scriptargs":%s,"Interval":"1s"}}`, P, args("s13")), false, false},
		{"SCRIPTARGS, upper case, by check register", "/v1/agent/check/register",
			fmt.Sprintf(`{"Name":"web-s14","ServiceID":"web-base","SCRIPTARGS":%s,"Interval":"1s"}`, args("s14")), false, false},
		{"args, Consul's alias", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s15","Port":%d,"Check":{"args":%s,"Interval":"1s"}}`, P, args("s15")), false, false},
		{"script_args, Consul's alias, by check register", "/v1/agent/check/register",
			fmt.Sprintf(`{"Name":"web-s16","ServiceID":"web-base","script_args":%s,"Interval":"1s"}`, args("s16")), false, false},
		{"ScriptArgs twice, empty first", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s17","Port":%d,"Check":{"ScriptArgs":[],"Interval":"1s","ScriptArgs":%s}}`, P, args("s17")), false, false},
		{"Check twice, TTL first", "/v1/agent/service/register",
			fmt.Sprintf(`{"Name":"web-s18","Port":%d,"Check":{"TTL":"30s"},"Check":{"ScriptArgs":%s,"Interval":"1s"}}`, P, args("s18")), false, false},
		{"catalog register Check of Type script", "/v1/catalog/register",
			fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Check":%s}`, hcnNode, catChk("web-s19", "script")), true, false},
		{"catalog register Checks[1] of Type docker", "/v1/catalog/register",
			fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Checks":[%s,%s]}`, hcnNode, catChk("web-s20a", "ttl"), catChk("web-s20", "docker")), true, false},
		{"catalog register Definition with ScriptArgs", "/v1/catalog/register",
			fmt.Sprintf(`{"Node":%q,"Address":"127.0.0.1","SkipNodeUpdate":true,"Check":{"Node":%q,"CheckID":"web-s21","Name":"web-s21","ServiceID":"web-base","Definition":{"ScriptArgs":%s,"Interval":"1s"}}}`, hcnNode, hcnNode, args("s21")), false, true},
		{"txn Check of Type script", "/v1/txn",
			fmt.Sprintf(`[{"Check":{"Verb":"set","Check":%s}}]`, catChk("web-s22", "script")), true, false},
		{"txn Check of Type docker, after a KV set and a web-* service", "/v1/txn",
			fmt.Sprintf(`[{"KV":{"Verb":"set","Key":"app/web-s23","Value":"eA=="}},`+svcOp+`,{"Check":{"Verb":"cas","Check":%s}}]`, "web-s23", "web-s23", P, catChk("web-s23", "docker")), true, false},
		{"txn Check Definition with ScriptArgs", "/v1/txn",
			fmt.Sprintf(`[{"Check":{"Verb":"set","Check":{"Node":%q,"CheckID":"web-s24","Name":"web-s24","ServiceID":"web-base","Definition":{"ScriptArgs":%s,"Interval":"1s"}}}}]`, hcnNode, args("s24")), false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.snap(t)
			code, body := e.as(t, e.web, "PUT", c.path, c.body)
			if c.dropOK && code == http.StatusOK {
				// Forwarded without the script: the stored check must
				// carry neither the field nor the command.
				_, raw := call(t, http.DefaultClient, "GET", e.direct+"/v1/health/node/"+hcnNode, "")
				if strings.Contains(raw, "ScriptArgs") || strings.Contains(raw, dir) {
					t.Errorf("the catalog holds the script: %s", raw)
				}
				for id := range e.catalogChecks(t, hcnNode) {
					if _, ok := before["catalog check "+id]; !ok {
						e.put(t, "/v1/catalog/deregister", hcnJSON(t, map[string]string{"Node": hcnNode, "CheckID": id}))
					}
				}
				return
			}
			if c.strict {
				hcnDenied(t, c.body, code, body)
			} else {
				hcnRefused(t, c.body, code, body)
			}
			e.nothingNew(t, "the refused request", before)
		})
	}

	// The scripts run every second; a denied one never ran. A bounded wait
	// is right here because it asserts an absence: 3 s is three intervals.
	deadline := time.Now().Add(3 * time.Second)
	ran := map[string]bool{}
	for time.Now().Before(deadline) {
		for name, f := range files {
			if _, err := os.Stat(f); err == nil {
				ran[name] = true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name := range ran {
		t.Errorf("the script of case %s ran on the agent's host", name)
	}
	for id, c := range e.agentChecks(t) {
		if c.Type == "script" || c.Type == "docker" || strings.HasPrefix(c.Name, "web-s") || strings.HasPrefix(c.ServiceID, "web-s") {
			t.Errorf("agent: check %s %+v", id, c)
		}
	}
	for id, c := range e.catalogChecks(t, hcnNode) {
		if c.Type == "script" || c.Type == "docker" || strings.HasPrefix(id, "web-s") {
			t.Errorf("catalog: check %s %+v", id, c)
		}
	}
	for id := range e.agentServices(t) {
		if strings.HasPrefix(id, "web-s") {
			t.Errorf("agent: service %s", id)
		}
	}
	var kv []any
	if e.get(t, "/v1/kv/app/web-s23", &kv); len(kv) > 0 {
		t.Errorf("a refused txn wrote app/web-s23: %v", kv)
	}
}
