package consul

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/storegate/storegate/gate"
)

func TestParseHostIP(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1": "127.0.0.1", "127.1": "127.0.0.1", "0x7f000001": "127.0.0.1", "2130706433": "127.0.0.1",
		"0177.0.0.1": "127.0.0.1", "0x7f.0.0.1": "127.0.0.1", "127.0.1": "127.0.0.1", "[::1]": "::1",
		"::ffff:127.0.0.1": "127.0.0.1", "[::ffff:7f00:1]": "127.0.0.1", "169.254.169.254.": "169.254.169.254",
		"fe80::1%eth0": "fe80::1", "0": "0.0.0.0", "0.0.0.0": "0.0.0.0", "10.0.0.5": "10.0.0.5",
	} {
		ip, ok := parseHostIP(in)
		if !ok || ip != netip.MustParseAddr(want) {
			t.Errorf("parseHostIP(%q) = %v, %v; want %s", in, ip, ok, want)
		}
	}
	for _, in := range []string{"localhost", "example.com", "1.2.3.4.5", "256.1.1.1", "0x1ffffffff", "1.2.3.0x100", "", "1..2"} {
		if ip, ok := parseHostIP(in); ok {
			t.Errorf("parseHostIP(%q) = %v, want not an IP", in, ip)
		}
	}
}

func TestGuardClassifies(t *testing.T) {
	g := newGuard(context.Background(), []Guarded{
		{Addr: "127.0.0.1:8500", What: guardConsul},
		{Addr: "127.0.0.1:2379", What: guardEtcd},
		{Addr: ":2378", What: guardGateway},
		{Addr: "10.9.9.9:8300", What: guardConsul},
	})
	for _, tt := range []struct {
		host string
		port int
		want string
	}{
		{"127.0.0.1", 8500, guardConsul},
		{"localhost", 8500, guardConsul},
		{"127.1", 8500, guardConsul},
		{"2130706433", 8500, guardConsul},
		{"::1", 8500, guardConsul},
		{"0.0.0.0", 8500, guardConsul},
		{"::ffff:127.0.0.1", 2379, guardEtcd},
		{"127.0.0.2", 2378, guardGateway},
		{"any.example.com", 2379, guardEtcd}, // a name may resolve anywhere
		{"10.9.9.9", 8300, guardConsul},
		{"10.9.9.8", 8300, ""},
		{"127.0.0.1", 8080, ""},
		{"169.254.169.254", 80, guardMetadata},
		{"169.254.1.1", 80, guardLinkLocal},
		{"fe80::1", 80, guardLinkLocal},
		{"metadata.google.internal", 80, guardMetadata},
		{"METADATA.google.internal.", 80, guardMetadata},
	} {
		if got := g.guarded(tt.host, tt.port, nil); got != tt.want {
			t.Errorf("guarded(%s, %d) = %q, want %q", tt.host, tt.port, got, tt.want)
		}
	}
}

func TestCheckTargets(t *testing.T) {
	s := &Server{guard: newGuard(context.Background(), []Guarded{{Addr: "127.0.0.1:8500", What: guardConsul}})}
	local := &gate.Service{Name: "web", Port: 8080}
	remote := &gate.Service{Name: "web", Address: "10.0.0.5", Port: 8080,
		TaggedAddresses: map[string]gate.Endpoint{"wan": {Address: "web.example.com", Port: 443}}}
	for _, tt := range []struct {
		name      string
		c         api.AgentServiceCheck
		svc       *gate.Service
		agentHost bool
		kind      gate.CheckKind
		host      string
		port      int
		own       bool
		guarded   string
	}{
		{"own http", api.AgentServiceCheck{HTTP: "http://127.0.0.1:8080/health"}, local, true, gate.CheckHTTP, "127.0.0.1", 8080, true, ""},
		{"own http by localhost", api.AgentServiceCheck{HTTP: "http://LOCALHOST.:8080/"}, local, true, gate.CheckHTTP, "localhost", 8080, true, ""},
		{"localhost in a catalog", api.AgentServiceCheck{HTTP: "http://localhost:8080/"}, local, false, gate.CheckHTTP, "localhost", 8080, false, ""},
		{"default port", api.AgentServiceCheck{HTTP: "http://127.0.0.1/"}, local, true, gate.CheckHTTP, "127.0.0.1", 80, false, ""},
		{"https default port", api.AgentServiceCheck{HTTP: "https://10.0.0.5/"}, remote, true, gate.CheckHTTP, "10.0.0.5", 443, false, ""},
		{"userinfo", api.AgentServiceCheck{HTTP: "http://x@127.0.0.1:8500/v1/kv/x"}, local, true, gate.CheckHTTP, "127.0.0.1", 8500, false, guardConsul},
		{"another scheme", api.AgentServiceCheck{HTTP: "ftp://127.0.0.1:8080/"}, local, true, gate.CheckHTTP, "", 0, false, ""},
		{"tcp own", api.AgentServiceCheck{TCP: "10.0.0.5:8080"}, remote, true, gate.CheckTCP, "10.0.0.5", 8080, true, ""},
		{"tcp loopback for a remote service", api.AgentServiceCheck{TCP: "127.0.0.1:8080"}, remote, true, gate.CheckTCP, "127.0.0.1", 8080, false, ""},
		{"tagged address", api.AgentServiceCheck{H2PING: "WEB.example.com:443"}, remote, true, gate.CheckH2Ping, "web.example.com", 443, true, ""},
		{"grpc with a service", api.AgentServiceCheck{GRPC: "127.0.0.1:8080/health.v1"}, local, true, gate.CheckGRPC, "127.0.0.1", 8080, true, ""},
		{"udp consul", api.AgentServiceCheck{UDP: "[::1]:8500"}, local, true, gate.CheckUDP, "::1", 8500, false, guardConsul},
		{"service claims the agent's port", api.AgentServiceCheck{HTTP: "http://127.0.0.1:8500/"}, &gate.Service{Port: 8500}, true, gate.CheckHTTP, "127.0.0.1", 8500, true, guardConsul},
		{"script", api.AgentServiceCheck{Args: []string{"sh", "-c", "id"}, HTTP: "http://127.0.0.1:8080/"}, local, true, gate.CheckScript, "", 0, false, ""},
		{"docker", api.AgentServiceCheck{DockerContainerID: "x", Args: nil}, local, true, gate.CheckDocker, "", 0, false, ""},
		{"node check", api.AgentServiceCheck{TCP: "127.0.0.1:8080"}, nil, true, gate.CheckTCP, "127.0.0.1", 8080, false, ""},
	} {
		c := s.checkOf(&tt.c, "", "", tt.svc, tt.agentHost, nil)
		tg := c.Target
		if c.Kind != tt.kind || tg.Host != tt.host || tg.Port != tt.port || tg.Own != tt.own || tg.Guarded != tt.guarded {
			t.Errorf("%s: got %v %s:%d own=%v guarded=%q; want %v %s:%d own=%v guarded=%q", tt.name,
				c.Kind, tg.Host, tg.Port, tg.Own, tg.Guarded, tt.kind, tt.host, tt.port, tt.own, tt.guarded)
		}
	}
}

func TestNoRedirects(t *testing.T) {
	q := &request{body: []byte(`{"Name":"web","Check":{"HTTP":"http://a/"},"Checks":[{"TTL":"5s"},{"HTTP":"http://b/"}],` +
		`"Connect":{"SidecarService":{"Checks":[{"HTTP":"http://c/"}]}}}`)}
	q.r = httptest.NewRequest(http.MethodPut, "/v1/agent/service/register", nil)
	if err := noRedirects(q); err != nil {
		t.Fatal(err)
	}
	want := `{"Check":{"DisableRedirects":true,"HTTP":"http://a/"},"Checks":[{"TTL":"5s"},{"DisableRedirects":true,"HTTP":"http://b/"}],` +
		`"Connect":{"SidecarService":{"Checks":[{"DisableRedirects":true,"HTTP":"http://c/"}]}},"Name":"web"}`
	got, _ := io.ReadAll(q.r.Body)
	if string(got) != want {
		t.Errorf("forwarded body = %s\nwant %s", got, want)
	}
}

func TestChecksOfEveryKind(t *testing.T) {
	s := &Server{guard: newGuard(context.Background(), nil)}
	svc := &gate.Service{Name: "web", Port: 8080}
	got := s.checksOf(&api.AgentServiceCheck{HTTP: "http://127.0.0.1:8080/", TCP: "127.0.0.1:8500", Args: []string{"id"}, TTL: "5s"},
		"c", "", svc, true, nil)
	var kinds []string
	for _, c := range got {
		kinds = append(kinds, c.Kind.String())
	}
	if strings.Join(kinds, ",") != "script,http,tcp,ttl" {
		t.Errorf("kinds = %v", kinds)
	}
	if !got[1].Target.Own || got[2].Target.Own {
		t.Errorf("targets: %+v", got)
	}
}
