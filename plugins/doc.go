// Package plugins is the host side of storegate's WebAssembly plugins: it
// loads modules that implement ABI version 1 (ABI.md, next to this file),
// runs them on wazero over every op policy allowed and every item going
// back, and reloads them when their files change. *Host implements
// gate.Transformer; Check serves `gateway plugin check FILE.wasm`.
//
// # Order
//
// The request chain runs mutators (capability 1) in configuration order,
// each seeing the previous one's result, then validators in configuration
// order, which see the final op: Kubernetes' admission order, after
// policy. The response chain runs the plugins with a response hook in the
// reverse of the request chain, so a namespace a mutator added first is
// stripped last. A Match (protocols, resources, actions, key globs) picks
// the ops each plugin sees; request ops without key, range or value never
// reach a plugin.
//
// # Instances: a fixed pool in a channel
//
// Each plugin has its own wazero runtime (the memory limit is a runtime
// setting) and, per loaded version, a fixed number of instances held in a
// buffered channel. A call takes one, runs, and puts it back, so a guest
// never sees two calls at once and needs no locks; the number of
// instances bounds both the plugin's memory and its concurrency; waiting
// for a free instance is a select that honours the caller's context and
// ends after the plugin's timeout (a busy failure); and
// retiring a version (reload, Close) is receiving every slot back. A
// sync.Pool would give none of that: it drops instances at any GC and
// creates new ones without bound. A failed instance's slot is refilled in
// the background from the CompiledModule (one compilation per version),
// so the pool stays full and the failing call does not wait for an
// instantiation.
//
// # Calls: CallWithStack and what is copied
//
// Every call is api.Function.CallWithStack on a two-slot stack the
// instance owns, (ptr, len) in, the packed result out: wazero's Call would
// allocate a slice per call. The envelope is encoded straight into the
// guest's input buffer (a view of its memory from api.Memory.Read; no
// guest code runs between encoding and the call, so the memory cannot
// move) and the result is decoded in place from another view. So on the
// continue path the host copies the op into the guest exactly once and
// allocates nothing: TestContinueAllocs checks it. Only what the host
// keeps is copied out: a deny reason (into a string) and a mutated key,
// range end or value (into new slices set on the op; the caller's slices
// are never written to).
//
// wazero itself allocates a few objects per call (a watcher goroutine, a
// channel, a cancel func: 3 allocations) because the runtime is built
// WithCloseOnContextDone, which compiles termination checks into the
// guest's loops: that is what lets a deadline interrupt a guest stuck in a
// loop. The checks cost more than the allocations: every loop back-edge
// in the guest exits to Go to see whether the module was closed, about
// 40ns each. A guest that loops once per byte over a 10 KiB value spends
// ~0.4ms there, eight times its own work (BenchmarkRequest10KB), so
// plugins that scan values should handle several bytes per iteration.
//
// The deadline of each call is not a context.WithTimeout (a context, a
// timer and a func per call) but one context per instance (deadline.go)
// whose timer is re-armed per call and whose Done channel is closed only
// when the deadline fires, after which the instance is replaced anyway.
// When the caller's own deadline is sooner it bounds the call, and its
// passing is not counted as the plugin's failure. Deadlines are wall-clock
// time: on a starved machine a trivial call can miss a tight one.
//
// # Failures
//
// A call that does not produce a valid verdict is a failure of one kind,
// the label of storegate_plugin_failures_total{plugin,kind}:
//
//   - trap: the guest trapped (unreachable, out-of-bounds access, stack
//     overflow) or exited;
//   - timeout: it ran past its deadline and was interrupted;
//   - memory: storegate_alloc returned 0, or the guest failed with its
//     memory within an eighth of its limit (WebAssembly reports a refused
//     memory.grow only to the guest, so the host judges by what is left);
//   - malformed: the result lies outside memory, its lengths disagree with
//     its size, its verdict is unknown, or its reserved bytes are set;
//   - abi: the module broke the contract: a validator that mutates, a
//     response hook that changes a range end, an empty mutated key, a
//     buffer outside memory; at load, a missing export, a wrong signature,
//     version or capability, a mutator under FailAllow, or an init that
//     refuses its configuration;
//   - busy: no instance came free within the plugin's timeout (the wait
//     also ends with the request's context, which is not a failure).
//
// Under FailDeny (the default) the op is denied with "plugin NAME failed:
// KIND: DETAIL"; under FailAllow it continues unchanged and a warning is
// logged. Either way the failure is counted and the instance, whose state
// can no longer be trusted, is closed and replaced. Some failures deny
// under FailAllow too (Failure.FailsClosed): busy, because filling a pool
// with slow calls is within any caller's reach and must not switch a
// validator off for everyone; and a validator that returned mutate,
// because the op unchanged is not what its author let through. FailAllow
// is refused at load for a mutator: an op a mutator did not rewrite is not
// what the callers' policy expects.
//
// # Recycling at half the limit
//
// An instance whose memory grew past half of its limit is replaced after
// its call, as if it had failed but without counting a failure. Guest
// memory never shrinks, so a guest that leaks or fragments would
// otherwise creep to its limit and fail a request there; replacing it at
// half leaves the other half as headroom for the call that happens to
// need a large buffer, and bounds what the pool can hold to half the
// limit per instance in the steady state.
//
// # Reload
//
// Watch watches the directories of the plugins' files (an atomic rename
// replaces the file a watch on it would follow) and, a short while after a
// burst of events, reloads each plugin whose file content changed: compile,
// check the exports, fill a new pool of initialized instances, swap it in
// with an atomic pointer. New calls go to the new pool at once; calls in
// flight finish on the old instances, which are closed as they come back;
// a caller waiting on the old pool moves to the new one. A file that does
// not load is logged and counted (kind abi, or the kind of the call that
// failed), and the old version serves on.
//
// # Guests' environment
//
// Instances get WASI preview 1 with real clocks and crypto randomness, and
// stdout and stderr written to the gateway's log tagged with the plugin's
// name; no files, no environment, no arguments, no network. The host
// module "storegate" provides log(level, ptr, len).
package plugins
