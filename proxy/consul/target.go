package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/storegate/storegate/gate"
)

// What the gateway knows a check target to be (gate.CheckTarget.Guarded).
const (
	guardConsul    = "consul"
	guardEtcd      = "etcd"
	guardGateway   = "gateway"
	guardLinkLocal = "link_local"
	guardMetadata  = "metadata"
)

// Guarded is an address no health check may reach unless an intention
// names it: one of the stores' or one of the gateway's own listeners.
type Guarded struct {
	// Addr is host:port; a host that is a name is resolved once, when the
	// front starts.
	Addr string
	// What is "consul", "etcd" or "gateway".
	What string
}

// guard classifies check targets. It knows the guarded addresses given in
// Options, the ports the Consul agent listens on (read once from the
// agent's /v1/agent/self, with the gateway's token), and this host's own
// addresses: a listener on 0.0.0.0 is reachable through every one of them.
type guard struct {
	fixed []guardedAddr
	local []netip.Addr // this host's interface addresses

	mu    sync.Mutex
	agent []guardedAddr // the agent's ports, once read
	node  string        // the agent's node name, read with them
}

type guardedAddr struct {
	ip   netip.Addr // invalid: a name that did not resolve (matches by port)
	port int
	what string
}

func newGuard(ctx context.Context, gs []Guarded) *guard {
	g := &guard{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				g.local = append(g.local, p.Addr().Unmap())
			}
		}
	}
	for _, x := range gs {
		host, ps, err := net.SplitHostPort(x.Addr)
		if err != nil {
			continue
		}
		if host == "" {
			host = "::" // a listener on every address
		}
		port, _ := strconv.Atoi(ps)
		g.fixed = append(g.fixed, resolveGuarded(ctx, host, port, x.What)...)
	}
	return g
}

func resolveGuarded(ctx context.Context, host string, port int, what string) []guardedAddr {
	if ip, ok := parseHostIP(host); ok {
		return []guardedAddr{{ip: ip, port: port, what: what}}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	out := []guardedAddr{{port: port, what: what}} // the name itself: by port
	if err == nil {
		for _, ip := range ips {
			out = append(out, guardedAddr{ip: ip.Unmap(), port: port, what: what})
		}
	}
	return out
}

// agentPortKeys are the agent's listener ports in /v1/agent/self's
// DebugConfig.
var agentPortKeys = []string{"HTTPPort", "HTTPSPort", "GRPCPort", "GRPCTLSPort", "DNSPort", "ServerPort",
	"SerfPortLAN", "SerfPortWAN"}

// agentPorts reads the ports the Consul agent listens on, once: its HTTP,
// HTTPS, gRPC, DNS, server RPC and Serf ports, on the agent's address.
func (s *Server) agentPorts(ctx context.Context) ([]guardedAddr, error) {
	g := s.guard
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.agent != nil {
		return g.agent, nil
	}
	var out bytes.Buffer
	if err := s.upstream(ctx, http.MethodGet, "/v1/agent/self", "", nil, &out); err != nil {
		return nil, err
	}
	var self struct {
		Config      struct{ NodeName string }
		DebugConfig map[string]any
		Member      struct {
			Addr string
			Port int
		}
	}
	if err := json.Unmarshal(out.Bytes(), &self); err != nil {
		return nil, err
	}
	host := s.opts.Upstream.Hostname()
	var ports []int
	for _, k := range agentPortKeys {
		if n, ok := self.DebugConfig[k].(float64); ok && n > 0 && n < 65536 {
			ports = append(ports, int(n))
		}
	}
	if self.Member.Port > 0 {
		ports = append(ports, self.Member.Port)
	}
	agent := []guardedAddr{}
	for _, p := range ports {
		agent = append(agent, resolveGuarded(ctx, host, p, guardConsul)...)
		if ip, ok := parseHostIP(self.Member.Addr); ok {
			agent = append(agent, guardedAddr{ip: ip, port: p, what: guardConsul})
		}
	}
	// The listeners' own addresses ("tcp://127.0.0.1:8500").
	for k, v := range self.DebugConfig {
		if !strings.HasSuffix(k, "Addr") && !strings.HasSuffix(k, "Addrs") {
			continue
		}
		vals, _ := v.([]any)
		if str, ok := v.(string); ok {
			vals = []any{str}
		}
		for _, a := range vals {
			str, _ := a.(string)
			u, err := url.Parse(str)
			if err != nil || u.Scheme != "tcp" || u.Port() == "" {
				continue
			}
			if p, err := strconv.Atoi(u.Port()); err == nil {
				agent = append(agent, resolveGuarded(ctx, u.Hostname(), p, guardConsul)...)
			}
		}
	}
	g.agent, g.node = agent, self.Config.NodeName
	return agent, nil
}

// agentNode is the agent's node name (read by agentPorts; "" before).
func (s *Server) agentNode() string {
	s.guard.mu.Lock()
	defer s.guard.mu.Unlock()
	return s.guard.node
}

// hostKind is what a target's host is, before ports are compared.
type hostKind uint8

const (
	hostName      hostKind = iota // a DNS name: it may resolve anywhere
	hostLocal                     // loopback, unspecified, localhost or one of this host's addresses
	hostRemote                    // an IP of another host
	hostLinkLocal                 // 169.254.0.0/16, fe80::/10
	hostMetadata                  // a cloud metadata service
)

// metadataNames are the names cloud metadata services answer on.
var metadataNames = map[string]bool{
	"metadata": true, "metadata.google.internal": true, "metadata.goog": true,
	"instance-data": true, "instance-data.ec2.internal": true, "metadata.azure.com": true,
	"metadata.tencentyun.com": true, "metadata.platformequinix.com": true,
}

// metadataIPs are metadata services outside the link-local range.
var metadataIPs = map[netip.Addr]bool{
	netip.MustParseAddr("100.100.100.200"): true, // Alibaba Cloud
	netip.MustParseAddr("fd00:ec2::254"):   true, // AWS, IPv6
	netip.MustParseAddr("192.0.0.192"):     true, // Oracle Cloud
	netip.MustParseAddr("168.63.129.16"):   true, // Azure wire server
	netip.MustParseAddr("169.254.169.254"): true, // most (also link-local)
}

// normHost is a target host as the agent's resolver reads it: lower case,
// brackets, a zone and a trailing dot dropped.
func normHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// parseHostIP reads host as an IP, in every spelling a C resolver also
// takes for IPv4 (inet_aton: 127.1, 0x7f000001, 2130706433, 0177.0.0.1):
// a name that is an address to some resolver is that address.
func parseHostIP(host string) (netip.Addr, bool) {
	host = normHost(host)
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().WithZone(""), true
	}
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var nums []uint64
	for _, p := range parts {
		n, err := strconv.ParseUint(p, 0, 32) // 0x.. hex, 0.. octal, else decimal
		if err != nil {
			return netip.Addr{}, false
		}
		nums = append(nums, n)
	}
	var v uint64
	last := len(nums) - 1
	for i, n := range nums[:last] {
		if n > 0xff {
			return netip.Addr{}, false
		}
		v |= n << (24 - 8*i)
	}
	if nums[last] >= 1<<(32-8*last) {
		return netip.Addr{}, false
	}
	v |= nums[last]
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func (g *guard) kind(host string) (hostKind, netip.Addr) {
	h := normHost(host)
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return hostLocal, netip.Addr{}
	}
	if metadataNames[h] {
		return hostMetadata, netip.Addr{}
	}
	ip, ok := parseHostIP(h)
	if !ok {
		return hostName, netip.Addr{}
	}
	switch {
	case metadataIPs[ip]:
		return hostMetadata, ip
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return hostLinkLocal, ip
	case ip.IsLoopback() || ip.IsUnspecified():
		return hostLocal, ip
	}
	for _, l := range g.local {
		if l == ip {
			return hostLocal, ip
		}
	}
	return hostRemote, ip
}

// guarded names what the target host:port is, of what no check may reach:
// "" when it is none of them.
func (g *guard) guarded(host string, port int, agent []guardedAddr) string {
	k, ip := g.kind(host)
	switch k {
	case hostMetadata:
		return guardMetadata
	case hostLinkLocal:
		return guardLinkLocal
	}
	for _, list := range [][]guardedAddr{g.fixed, agent} {
		for _, a := range list {
			if a.port != port {
				continue
			}
			switch {
			case k == hostName: // it may resolve to the guarded host
				return a.what
			case !a.ip.IsValid(): // a guarded name: it may be any host
				return a.what
			case a.ip == ip:
				return a.what
			case k == hostLocal && g.isLocal(a.ip):
				return a.what
			}
		}
	}
	return ""
}

// isLocal reports whether ip is reached on this host (a listener on it is
// reached through every local address when it is unspecified).
func (g *guard) isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	for _, l := range g.local {
		if l == ip {
			return true
		}
	}
	return false
}

// own reports whether host:port is the service's own address and port, or
// one of its tagged addresses. A service with no address lives at its node's:
// on the agent's host for an agent registration, where a loopback or local
// target is its own.
func (g *guard) own(svc *gate.Service, host string, port int, agentHost bool) bool {
	if port <= 0 {
		return false
	}
	eps := []gate.Endpoint{{Address: svc.Address, Port: svc.Port}}
	for _, e := range svc.TaggedAddresses {
		eps = append(eps, e)
	}
	tk, tip := g.kind(host)
	for _, e := range eps {
		if e.Port != port {
			continue
		}
		if e.Address == "" {
			if agentHost && tk == hostLocal {
				return true
			}
			continue
		}
		ek, eip := g.kind(e.Address)
		switch {
		case tk == hostName && ek == hostName && normHost(host) == normHost(e.Address):
			return true
		case tip.IsValid() && eip.IsValid() && tip == eip:
			return true
		case agentHost && tk == hostLocal && ek == hostLocal:
			return true
		}
	}
	return false
}

// checksOf is the policy view of one check definition: one gate.Check for
// each kind of target it sets. A definition should set one, but which one the
// agent runs when it sets several depends on the agent's order of tests:
// every one is judged.
func (s *Server) checksOf(c *api.AgentServiceCheck, id, name string, svc *gate.Service, agentHost bool, agent []guardedAddr) []gate.Check {
	base := *c
	base.Args, base.DockerContainerID, base.HTTP, base.TCP, base.UDP, base.GRPC, base.H2PING = nil, "", "", "", "", "", ""
	base.AliasService, base.AliasNode, base.TTL = "", "", ""
	var parts []gate.Check
	add := func(set func(*api.AgentServiceCheck)) {
		p := base
		set(&p)
		parts = append(parts, s.checkOf(&p, id, name, svc, agentHost, agent))
	}
	switch {
	case c.DockerContainerID != "":
		add(func(p *api.AgentServiceCheck) { p.DockerContainerID, p.Args = c.DockerContainerID, c.Args })
	case len(c.Args) > 0:
		add(func(p *api.AgentServiceCheck) { p.Args = c.Args })
	}
	if c.HTTP != "" {
		add(func(p *api.AgentServiceCheck) { p.HTTP = c.HTTP })
	}
	if c.TCP != "" {
		add(func(p *api.AgentServiceCheck) { p.TCP = c.TCP })
	}
	if c.UDP != "" {
		add(func(p *api.AgentServiceCheck) { p.UDP = c.UDP })
	}
	if c.GRPC != "" {
		add(func(p *api.AgentServiceCheck) { p.GRPC = c.GRPC })
	}
	if c.H2PING != "" {
		add(func(p *api.AgentServiceCheck) { p.H2PING = c.H2PING })
	}
	if c.AliasService != "" || c.AliasNode != "" {
		add(func(p *api.AgentServiceCheck) { p.AliasService, p.AliasNode = c.AliasService, c.AliasNode })
	}
	if c.TTL != "" {
		add(func(p *api.AgentServiceCheck) { p.TTL = c.TTL })
	}
	if len(parts) == 0 {
		parts = append(parts, s.checkOf(&base, id, name, svc, agentHost, agent))
	}
	return parts
}

// checkOf is the policy view of one agent check definition, its target
// classified against svc (nil for a node check). agentHost says the service
// runs on the agent's host (an agent registration).
func (s *Server) checkOf(c *api.AgentServiceCheck, id, name string, svc *gate.Service, agentHost bool, agent []guardedAddr) gate.Check {
	out := gate.Check{ID: id, Name: name, AliasService: c.AliasService, AliasNode: c.AliasNode}
	if out.ID == "" {
		out.ID = c.CheckID
	}
	if out.Name == "" {
		out.Name = c.Name
	}
	t := &out.Target
	switch {
	case len(c.Args) > 0:
		out.Kind = gate.CheckScript
	case c.DockerContainerID != "":
		out.Kind = gate.CheckDocker
	case c.HTTP != "":
		out.Kind = gate.CheckHTTP
		t.URL, t.Method, t.Body = c.HTTP, c.Method, c.Body != ""
		for h := range c.Header {
			t.Headers = append(t.Headers, h)
		}
		t.Host, t.Port = urlTarget(c.HTTP)
	case c.TCP != "":
		out.Kind = gate.CheckTCP
		t.Host, t.Port = addrTarget(c.TCP)
	case c.UDP != "":
		out.Kind = gate.CheckUDP
		t.Host, t.Port = addrTarget(c.UDP)
	case c.GRPC != "":
		out.Kind = gate.CheckGRPC
		addr, _, _ := strings.Cut(c.GRPC, "/") // host:port/service
		t.Host, t.Port = addrTarget(addr)
	case c.H2PING != "":
		out.Kind = gate.CheckH2Ping
		t.Host, t.Port = addrTarget(c.H2PING)
	case c.AliasService != "" || c.AliasNode != "":
		out.Kind = gate.CheckAlias
	case c.TTL != "":
		out.Kind = gate.CheckTTL
	}
	s.classify(&out, svc, agentHost, agent)
	return out
}

// classify fills a networked check's Own and Guarded.
func (s *Server) classify(c *gate.Check, svc *gate.Service, agentHost bool, agent []guardedAddr) {
	t := &c.Target
	switch c.Kind {
	case gate.CheckHTTP, gate.CheckTCP, gate.CheckUDP, gate.CheckGRPC, gate.CheckH2Ping:
	default:
		return
	}
	if t.Host == "" {
		t.Guarded = "" // unreadable target: not own, so refused by the shipped policy
		return
	}
	t.Guarded = s.guard.guarded(t.Host, t.Port, agent)
	if svc != nil {
		t.Own = s.guard.own(svc, t.Host, t.Port, agentHost)
	}
}

// urlTarget is the host and port an HTTP check's URL connects to, as Go's
// HTTP client (the agent's) reads it: the scheme's port when none is given.
// An unreadable URL gives "".
func urlTarget(raw string) (string, int) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", 0
	}
	port := 0
	switch strings.ToLower(u.Scheme) {
	case "http":
		port = 80
	case "https":
		port = 443
	default:
		return "", 0 // the agent's client speaks only these
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return "", 0
		}
		port = n
	}
	return normHost(u.Hostname()), port
}

// addrTarget reads host:port as Go's dialer does.
func addrTarget(addr string) (string, int) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0
	}
	n, err := strconv.Atoi(ps)
	if err != nil {
		// A service name ("http") is a port to the dialer.
		if n, err = net.LookupPort("tcp", ps); err != nil {
			return "", 0
		}
	}
	if n <= 0 || n > 65535 {
		return "", 0
	}
	return normHost(host), n
}
