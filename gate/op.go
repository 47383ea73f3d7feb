package gate

import (
	"bytes"
	"fmt"
)

// Protocol is the store protocol a request arrived on.
type Protocol uint8

// Protocols.
const (
	ProtocolEtcd Protocol = iota + 1
	ProtocolConsul
)

var protocolNames = [...]string{ProtocolEtcd: "etcd", ProtocolConsul: "consul"}

func (p Protocol) String() string { return name(protocolNames[:], int(p), "protocol") }

// MarshalText writes the protocol's name (for JSON logs and explanations).
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Resource is what an op touches.
type Resource uint8

// Resources, shared by both stores so that one policy governs both.
const (
	ResourceKV Resource = iota + 1
	ResourceWatch
	ResourceLease
	ResourceLock
	ResourceElection
	ResourceSession
	ResourceService
	ResourceCheck
	ResourceNode
	ResourceCluster
	ResourceMaintenance
	ResourceAuth
	ResourceStatus
)

var resourceNames = [...]string{
	ResourceKV: "kv", ResourceWatch: "watch", ResourceLease: "lease", ResourceLock: "lock",
	ResourceElection: "election", ResourceSession: "session", ResourceService: "service",
	ResourceCheck: "check", ResourceNode: "node", ResourceCluster: "cluster",
	ResourceMaintenance: "maintenance", ResourceAuth: "auth", ResourceStatus: "status",
}

func (r Resource) String() string { return name(resourceNames[:], int(r), "resource") }

// MarshalText writes the resource's name.
func (r Resource) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// ParseResource parses a resource name as policies and the CLI spell it.
func ParseResource(s string) (Resource, error) {
	for i, n := range resourceNames {
		if n != "" && n == s {
			return Resource(i), nil
		}
	}
	return 0, fmt.Errorf("gate: unknown resource %q", s)
}

// Action is what an op does to its resource.
type Action uint8

// Actions.
const (
	ActionRead Action = iota + 1
	ActionWrite
	ActionDelete
	ActionWatch
	ActionGrant
	ActionRevoke
	ActionKeepalive
	ActionAcquire
	ActionRelease
	ActionRegister
	ActionDeregister
	ActionCampaign
	ActionProclaim
	ActionResign
	ActionCompact
	ActionAdmin
)

var actionNames = [...]string{
	ActionRead: "read", ActionWrite: "write", ActionDelete: "delete", ActionWatch: "watch",
	ActionGrant: "grant", ActionRevoke: "revoke", ActionKeepalive: "keepalive",
	ActionAcquire: "acquire", ActionRelease: "release", ActionRegister: "register",
	ActionDeregister: "deregister", ActionCampaign: "campaign", ActionProclaim: "proclaim",
	ActionResign: "resign", ActionCompact: "compact", ActionAdmin: "admin",
}

func (a Action) String() string { return name(actionNames[:], int(a), "action") }

// MarshalText writes the action's name.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// ParseAction parses an action name as policies and the CLI spell it.
func ParseAction(s string) (Action, error) {
	for i, n := range actionNames {
		if n != "" && n == s {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("gate: unknown action %q", s)
}

func name(names []string, i int, kind string) string {
	if i >= 0 && i < len(names) && names[i] != "" {
		return names[i]
	}
	return fmt.Sprintf("%s(%d)", kind, i)
}

// Op is one operation a request asks for: one key range, lease, session,
// service... A request decodes to one or more Ops (a Txn gives many); every
// field a decision could need is filled before policy runs.
type Op struct {
	Protocol Protocol
	Resource Resource
	Action   Action
	// Method is the gRPC method or HTTP route the op came from,
	// e.g. "/etcdserverpb.KV/Range" or "PUT /v1/kv/".
	Method string

	// Keys is the key range for key-addressed ops (etcd semantics).
	Keys KeyRange

	Lease     int64 // lease attached to or named by the op (0: none)
	ValueSize int   // bytes of value the op writes
	// Value is the value the op writes (a Put's, a Consul KV PUT's body, a
	// registration's JSON), for plugins, which may rewrite it. Policy sees
	// only ValueSize; the decision log never sees it.
	Value  []byte
	PrevKV bool // the op asks for the previous key-value (a read)
	// TxnIndex is the op's position in a transaction, counted from 1 in
	// walk order (compares, then success, then failure, depth first); 0
	// when the op is not part of a transaction.
	TxnIndex int

	// Foreign marks an op on a thing another identity owns (a lease the
	// gateway recorded as granted by Owner, or one with no owner on record,
	// Owner then empty). The gateway derives such ops after the caller's own
	// request was allowed; policy allows them only through an intention that
	// names owners.
	Foreign bool
	Owner   string

	// Consul targets.
	Service *Service
	// Node is the catalog node a node op registers, changes or removes.
	Node *Node
	// NewSession is what a session create asks Consul for.
	NewSession *NewSession
	Session    string
	Datacenter string
}

// Service is a Consul service registration as policy sees it: everything
// Consul will create or change for it. A registration that creates several
// services (a service and its Connect sidecar) gives one op per service.
type Service struct {
	Name string
	ID   string
	// Kind is Consul's service kind: "" for a typical service,
	// "connect-proxy", "mesh-gateway", "terminating-gateway",
	// "ingress-gateway", "api-gateway".
	Kind string
	// Node is the catalog node the service is registered on ("" for the
	// agent's own node, or when not known).
	Node    string
	Tags    []string
	Meta    map[string]string
	Address string
	Port    int
	// TaggedAddresses are the other addresses the service advertises
	// ("lan", "wan", "lan_ipv4"...), each with its port.
	TaggedAddresses map[string]Endpoint
	// Proxy is a connect-proxy's configuration: the service it fronts and
	// its upstreams (nil for other kinds).
	Proxy *Proxy
	// SidecarOf is the name of the service this one is the Connect sidecar
	// of ("" when it is not a sidecar).
	SidecarOf string
	// Checks are the health checks the registration adds or changes.
	Checks []Check
}

// Endpoint is a host and port as a registration spells it.
type Endpoint struct {
	Address string
	Port    int
}

// Proxy is a connect-proxy's place in the mesh.
type Proxy struct {
	DestinationName string
	DestinationID   string
	// Upstreams are the destination names of the proxy's upstreams.
	Upstreams []string
	// LocalService is where the proxy sends the mesh's traffic for its
	// destination; ExposePorts are the local ports whose paths it exposes.
	LocalService Endpoint
	ExposePorts  []int
	// LocalGuarded names what the gateway knows LocalService or an exposed
	// local port to be (as CheckTarget.Guarded): a proxy that forwards into
	// the stores or the gateway. "" for none.
	LocalGuarded string
}

// CheckKind is what a health check does.
type CheckKind uint8

// Check kinds, as Consul's check types.
const (
	CheckUnknown CheckKind = iota
	CheckTTL
	CheckHTTP
	CheckTCP
	CheckUDP
	CheckGRPC
	CheckH2Ping
	CheckAlias
	CheckOSService
	CheckScript
	CheckDocker
)

var checkKindNames = [...]string{CheckUnknown: "unknown", CheckTTL: "ttl", CheckHTTP: "http", CheckTCP: "tcp",
	CheckUDP: "udp", CheckGRPC: "grpc", CheckH2Ping: "h2ping", CheckAlias: "alias", CheckOSService: "os_service",
	CheckScript: "script", CheckDocker: "docker"}

func (k CheckKind) String() string { return name(checkKindNames[:], int(k), "check") }

// MarshalText writes the kind's name.
func (k CheckKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Check is one health check as policy sees it: what it does and what it
// reaches.
type Check struct {
	Kind CheckKind
	ID   string
	Name string
	// Target is what the agent connects to when it runs the check (zero for
	// ttl, alias and OS-service checks).
	Target CheckTarget
	// AliasService and AliasNode are what an alias check mirrors.
	AliasService, AliasNode string
	// OSService is the operating-system service an os_service check asks
	// about.
	OSService string
}

// CheckTarget is the network target of a check, as the agent will reach it.
type CheckTarget struct {
	// URL, Method, Headers (names only) and Body (whether one is sent) are
	// an HTTP check's request.
	URL     string
	Method  string
	Headers []string
	Body    bool
	// Host and Port are where the check connects: the URL's host and port
	// (the scheme's default port when it names none), or the address of a
	// TCP, UDP, gRPC or H2PING check. Host is lower case, an IP in its
	// canonical form when it is one.
	Host string
	Port int
	// Own is true when the target is the registering service's own address
	// and port (a loopback target counts as its own for a service on the
	// agent's host).
	Own bool
	// Guarded names what the gateway knows the target to be, which no
	// check may reach unless an intention names it: "consul" (the agent),
	// "etcd", "gateway" (its own listeners), "link_local", "metadata";
	// "" for none of those.
	Guarded string
}

// NewSession is a Consul session as its create request defines it, with
// Consul's defaults: the node it is bound to, the checks whose failure
// invalidates it, what happens to its locks then, and its TTL.
type NewSession struct {
	Node          string
	NodeChecks    []string
	ServiceChecks []string
	Behavior      string
	TTL           string
}

// Node is a Consul catalog node as a registration names it.
type Node struct {
	Name            string
	ID              string
	Address         string
	TaggedAddresses map[string]string
	Meta            map[string]string
}

// KeyRange is an etcd key range: End empty means the single key Key; End
// "\x00" means every key >= Key; otherwise [Key, End).
type KeyRange struct {
	Key []byte
	End []byte
}

// Single reports whether the range names exactly one key.
func (r KeyRange) Single() bool { return len(r.End) == 0 }

// All reports whether the range is every key >= Key.
func (r KeyRange) All() bool { return len(r.End) == 1 && r.End[0] == 0 }

// PrefixEnd returns the range end that selects every key starting with p,
// as etcd clients compute it ("\x00" when p is empty or all 0xff).
func PrefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// Prefix returns the longest prefix P such that every key in the range
// starts with P, and whether the range is exactly "every key starting with
// P". For a single key it returns the key and false.
func (r KeyRange) Prefix() (p []byte, exact bool) {
	switch {
	case r.Single():
		return r.Key, false
	case r.All():
		n := 0
		for n < len(r.Key) && r.Key[n] == 0xff {
			n++
		}
		return r.Key[:n], n == len(r.Key)
	}
	n := 0
	for n < len(r.Key) && n < len(r.End) && r.Key[n] == r.End[n] {
		n++
	}
	if n < len(r.Key) && len(r.End) == n+1 && r.Key[n] < 0xff && r.End[n] == r.Key[n]+1 {
		j := n + 1
		for j < len(r.Key) && r.Key[j] == 0xff {
			j++
		}
		return r.Key[:j], j == len(r.Key)
	}
	return r.Key[:n], false
}

// Contains reports whether key lies in the range.
func (r KeyRange) Contains(key []byte) bool {
	switch {
	case r.Single():
		return bytes.Equal(key, r.Key)
	case r.All():
		return bytes.Compare(key, r.Key) >= 0
	}
	return bytes.Compare(key, r.Key) >= 0 && bytes.Compare(key, r.End) < 0
}

// Overlaps reports whether some key starting with prefix lies in the range.
func (r KeyRange) Overlaps(prefix []byte) bool {
	if r.Single() {
		return bytes.HasPrefix(r.Key, prefix)
	}
	if !r.All() && bytes.Compare(r.Key, r.End) >= 0 {
		return false
	}
	end := PrefixEnd(prefix) // keys with the prefix are [prefix, end)
	startsBeforeEnd := len(end) == 1 && end[0] == 0 || bytes.Compare(r.Key, end) < 0
	endsAfterStart := r.All() || bytes.Compare(r.End, prefix) > 0
	return startsBeforeEnd && endsAfterStart
}
