package sdk

// Op is one operation of a request, decoded from an op envelope, that
// policy already allowed (ABI.md, "The op envelope").
//
// The byte slices are views into the host's input buffer: valid only
// during the OnRequest call that received the Op, and never to be written
// to. Copy what must outlive the call; hand new bytes back through a
// Result's setters. The Op itself is reused by the SDK for the next call.
// Each slice's capacity ends at its length, so an append to one copies
// instead of overwriting its neighbour.
type Op struct {
	Protocol Protocol // the store addressed
	Resource Resource // what the op acts on
	Action   Action   // what it does
	Flags    Flags    // FlagValue, FlagRange, FlagTxn
	TxnIndex uint16   // position in its transaction from 1 (walk order); 0 outside one
	Lease    uint64   // lease ID attached to the op, 0 for none

	Caller   []byte // the caller's SPIFFE ID, e.g. spiffe://example.org/web
	Key      []byte // the key; Consul keys carry a leading "/"
	RangeEnd []byte // etcd semantics: empty = the single Key, "\x00" = every key >= Key
	Value    []byte // the value written; for service and check registrations, Consul's JSON
	Service  []byte // the service's name for service and check ops, else empty
}

// HasValue reports whether the op carries a value (which may be empty).
func (op *Op) HasValue() bool { return op.Flags.Has(FlagValue) }

// IsRange reports whether the op's key is a range (RangeEnd is set).
func (op *Op) IsRange() bool { return op.Flags.Has(FlagRange) }

// InTxn reports whether the op is part of a transaction (see TxnIndex).
func (op *Op) InTxn() bool { return op.Flags.Has(FlagTxn) }

// Item is one key/value going back to the caller, decoded from an item
// envelope (ABI.md, "The item envelope"). Protocol, Resource and Action are
// those of the request the item answers: kv/read for a range or KV GET,
// watch/watch for a watch event, kv/write or kv/delete for a previous
// value.
//
// The same lifetime rules as Op's hold: the slices are views into the input
// buffer, valid only during the OnResponse call, and the Item is reused.
type Item struct {
	Protocol Protocol // the store answering
	Resource Resource // resource of the request answered
	Action   Action   // action of the request answered
	Flags    Flags    // FlagValue when the item has a value

	Caller []byte // the caller's SPIFFE ID
	Key    []byte // the item's key (leading "/" for Consul)
	Value  []byte // the item's value, when HasValue
}

// HasValue reports whether the item carries a value (which may be empty);
// a Consul ?keys listing, for one, has none.
func (it *Item) HasValue() bool { return it.Flags.Has(FlagValue) }
