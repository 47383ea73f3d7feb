package sdk

// Plugin is what a plugin registers: its hooks and whether it mutates.
// The SDK derives the storegate_capabilities bits from it.
type Plugin struct {
	// Mutates makes the plugin a mutator (capability bit 1): its
	// OnRequest may return Mutate. A validator (false) that returns one is
	// denied by the SDK instead, with a reason saying so.
	Mutates bool
	// Init receives the plugin's configuration, JSON ("{}" when none),
	// once per instance before any hook. The bytes are valid only during
	// the call (decoding them with encoding/json copies what is kept). An
	// error refuses to start the plugin, its text being the reason. Nil:
	// no configuration.
	Init func(config []byte) error
	// OnRequest judges one op that policy allowed. Nil: every op
	// continues.
	OnRequest func(op *Op) Result
	// OnResponse judges one item going back; setting it sets capability
	// bit 2. It may change the item's key and value, not a range end. Nil:
	// the plugin has no response hook.
	OnResponse func(item *Item) Result
}

// Capability bits of storegate_capabilities.
const (
	capMutates  = 1 // the request hook may mutate
	capResponse = 2 // there is a response hook
)

// registered is the plugin that Register recorded; ok says whether one did.
var registered struct {
	plugin Plugin
	ok     bool
}

// Register records p as the module's plugin. Call it once, from an init
// function of package main: the WASI reactor's _initialize runs init
// functions before the host calls anything, and main never runs. A second
// call panics, which fails the module's initialization.
func Register(p Plugin) {
	if registered.ok {
		panic("sdk: Register called twice")
	}
	registered.plugin, registered.ok = p, true
}

// Capabilities returns the storegate_capabilities bit set derived from the
// registered plugin (0 when none is registered).
func Capabilities() int32 {
	var caps int32
	if registered.plugin.Mutates {
		caps |= capMutates
	}
	if registered.plugin.OnResponse != nil {
		caps |= capResponse
	}
	return caps
}
