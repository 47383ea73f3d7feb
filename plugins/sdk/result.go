package sdk

// Result is what a hook decides: Continue, Deny or Mutate. It is a small
// value; build one with a constructor and, for a mutation, its setters:
//
//	return sdk.Mutate().SetKey(prefix, op.Key).SetValue(sealed)
//
// The bytes given to a setter are copied at once into an SDK-owned buffer
// that is reused from call to call, so a Result is only meaningful during
// the hook call that made it (and its accessors only until the next call).
type Result struct {
	verdict Verdict
	reason  string
	key     span // new key, if set
	end     span // new range end, if set
	value   span // new value, if set
}

// span locates one changed part of a mutation inside the SDK's scratch
// buffer.
type span struct {
	off, n int
	set    bool
}

// scratch holds the bytes of the current call's mutation parts. The SDK
// empties it at the start of every hook call; it only grows when a call
// needs more than any before it, so it stops allocating once warm. One call
// at a time runs per instance (ABI.md), so it needs no lock.
var scratch []byte

// Continue lets the op or item go on unchanged.
func Continue() Result { return Result{} }

// Deny refuses the op (or fails the response) with reason, which the
// gateway says to the caller. A constant reason costs no allocation.
func Deny(reason string) Result { return Result{verdict: VerdictDeny, reason: reason} }

// Mutate starts a mutation; nothing changes until a setter says what.
// A mutation with no part set is sent as Continue. Only a plugin
// registered with Mutates may return one from OnRequest.
func Mutate() Result { return Result{verdict: VerdictMutate} }

// SetKey sets the new key to the concatenation of parts (copied now) and
// returns the mutation. Called on a Continue it makes a mutation; on a
// Deny it does nothing (the denial stands). The new key must not be
// empty, and a Consul key must keep its leading "/".
func (r Result) SetKey(parts ...[]byte) Result {
	r.set(&r.key, parts)
	return r
}

// SetRangeEnd sets the new range end to the concatenation of parts
// (etcd semantics: empty = the single key, "\x00" = every key >= key).
// Request hooks only: a response hook that changes a range end breaks the
// ABI, and the SDK denies such a result instead of sending it.
func (r Result) SetRangeEnd(parts ...[]byte) Result {
	r.set(&r.end, parts)
	return r
}

// SetValue sets the new value to the concatenation of parts (copied now).
func (r Result) SetValue(parts ...[]byte) Result {
	r.set(&r.value, parts)
	return r
}

// AppendValue sets the new value to what fn appends to dst, which is the
// SDK's buffer, and returns the mutation. fn must append to dst and return
// the extended slice, as the append builtin and cipher.AEAD.Seal do; it
// lets a plugin produce a value in place, without a buffer of its own.
// If fn returns dst unchanged, the new value is empty.
func (r Result) AppendValue(fn func(dst []byte) []byte) Result {
	if r.verdict == VerdictDeny {
		return r
	}
	start := len(scratch)
	out := fn(scratch)
	if len(out) < start {
		panic("sdk: AppendValue's function must append to dst, not replace it")
	}
	scratch = out
	r.verdict = VerdictMutate
	r.value = span{off: start, n: len(out) - start, set: true}
	return r
}

// set copies parts into scratch, records their span in *s (a field of r)
// and turns r into a mutation, unless r is a denial.
func (r *Result) set(s *span, parts [][]byte) {
	if r.verdict == VerdictDeny {
		return
	}
	start := len(scratch)
	for _, p := range parts {
		scratch = append(scratch, p...)
	}
	*s = span{off: start, n: len(scratch) - start, set: true}
	r.verdict = VerdictMutate
}

// Verdict is the result's verdict.
func (r Result) Verdict() Verdict { return r.verdict }

// Reason is a denial's reason ("" otherwise).
func (r Result) Reason() string { return r.reason }

// Key returns the new key and whether a setter set one. The bytes are the
// SDK's, valid until the next hook call.
func (r Result) Key() ([]byte, bool) { return r.key.bytes() }

// RangeEnd returns the new range end and whether a setter set one.
func (r Result) RangeEnd() ([]byte, bool) { return r.end.bytes() }

// Value returns the new value and whether a setter set one.
func (r Result) Value() ([]byte, bool) { return r.value.bytes() }

// changed reports whether a mutation changes anything at all.
func (r Result) changed() bool { return r.key.set || r.end.set || r.value.set }

// bytes returns the span's bytes in scratch, or nil, false when unset.
func (s span) bytes() ([]byte, bool) {
	if !s.set {
		return nil, false
	}
	return scratch[s.off : s.off+s.n : s.off+s.n], true
}
