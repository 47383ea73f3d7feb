package sdk

// ABIVersion is the version of the ABI this SDK implements; the
// storegate_abi_version export returns it.
const ABIVersion = 1

// Protocol is the store an op was addressed to (envelope byte 2). Numbers
// the SDK does not know may appear: a plugin must let such ops continue.
type Protocol uint8

// The protocols of ABI version 1.
const (
	ProtocolEtcd   Protocol = 1 // etcd v3 (gRPC or its JSON gateway)
	ProtocolConsul Protocol = 2 // Consul's HTTP API
)

// String names the protocol as ABI.md does, for logs and messages.
func (p Protocol) String() string {
	switch p {
	case ProtocolEtcd:
		return "etcd"
	case ProtocolConsul:
		return "consul"
	}
	return "unknown"
}

// Resource is what an op acts on (envelope byte 3), numbered as in ABI.md.
// New numbers may be added within version 1.
type Resource uint8

// The resources of ABI version 1.
const (
	ResourceKV          Resource = 1
	ResourceWatch       Resource = 2
	ResourceLease       Resource = 3
	ResourceLock        Resource = 4
	ResourceElection    Resource = 5
	ResourceSession     Resource = 6
	ResourceService     Resource = 7
	ResourceCheck       Resource = 8
	ResourceNode        Resource = 9
	ResourceCluster     Resource = 10
	ResourceMaintenance Resource = 11
	ResourceAuth        Resource = 12
	ResourceStatus      Resource = 13
)

// resourceNames maps each known resource to its ABI.md name; index 0 is
// unused.
var resourceNames = [...]string{"", "kv", "watch", "lease", "lock", "election", "session", "service",
	"check", "node", "cluster", "maintenance", "auth", "status"}

// String names the resource as ABI.md does ("unknown" for a number this
// SDK predates).
func (r Resource) String() string {
	if r == 0 || int(r) >= len(resourceNames) {
		return "unknown"
	}
	return resourceNames[r]
}

// Action is what an op does to its resource (envelope byte 4), numbered as
// in ABI.md. New numbers may be added within version 1.
type Action uint8

// The actions of ABI version 1.
const (
	ActionRead       Action = 1
	ActionWrite      Action = 2
	ActionDelete     Action = 3
	ActionWatch      Action = 4
	ActionGrant      Action = 5
	ActionRevoke     Action = 6
	ActionKeepalive  Action = 7
	ActionAcquire    Action = 8
	ActionRelease    Action = 9
	ActionRegister   Action = 10
	ActionDeregister Action = 11
	ActionCampaign   Action = 12
	ActionProclaim   Action = 13
	ActionResign     Action = 14
	ActionCompact    Action = 15
	ActionAdmin      Action = 16
)

// actionNames maps each known action to its ABI.md name; index 0 is
// unused.
var actionNames = [...]string{"", "read", "write", "delete", "watch", "grant", "revoke", "keepalive",
	"acquire", "release", "register", "deregister", "campaign", "proclaim", "resign", "compact", "admin"}

// String names the action as ABI.md does ("unknown" for a number this SDK
// predates).
func (a Action) String() string {
	if a == 0 || int(a) >= len(actionNames) {
		return "unknown"
	}
	return actionNames[a]
}

// Flags is the envelope's flag byte (byte 5). Bits this SDK does not know
// are kept as they came.
type Flags uint8

// The flag bits of ABI version 1.
const (
	FlagValue Flags = 1 << 0 // the op (or item) has a value, possibly empty
	FlagRange Flags = 1 << 1 // the key is a range: RangeEnd is set
	FlagTxn   Flags = 1 << 2 // the op is part of a transaction
)

// Has reports whether every bit of f2 is set in f.
func (f Flags) Has(f2 Flags) bool { return f&f2 == f2 }

// Verdict is what a hook decided (result byte 0).
type Verdict uint8

// The verdicts of ABI version 1.
const (
	VerdictContinue Verdict = 0 // the op or item goes on unchanged
	VerdictDeny     Verdict = 1 // refused, with a reason said to the caller
	VerdictMutate   Verdict = 2 // goes on with a new key, range end or value
)

// Level is the severity of a log message (the host import's first
// argument).
type Level int32

// The log levels of ABI version 1.
const (
	LevelDebug Level = 0
	LevelInfo  Level = 1
	LevelWarn  Level = 2
	LevelError Level = 3
)
