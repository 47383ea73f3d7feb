package gate

import (
	"bytes"
	"context"
	"strconv"
)

// Request is one request's way through the gate. A front fills it with the
// ops the caller asked for (Ask) and the ops the gateway derives from them
// for policy only (Derive, DeriveAfter), then drives it: Authorize, then
// Transform, then — after forwarding — Readable and Respond over what goes
// back. Every error it returns is a *Error, the one boundary error a front
// maps to its protocol.
//
// The rules live here, once:
//   - only Allow passes; Filter passes only for an asked op the front said
//     it can narrow (Narrow); every other effect denies;
//   - derived ops are judged only after every asked op was allowed, and the
//     work that derives them (upstream look-ups) runs only then, so a
//     caller with no rights makes the gateway do nothing upstream;
//   - a derived op's denial tells the caller only that the request was
//     denied: the full reason, which may name what the caller cannot read,
//     goes to the decision log and the span;
//   - no op reaches the reserved prefix, before plugins or after them.
//
// A Request is used by one goroutine.
type Request struct {
	g      *Gate
	caller Identity
	ops    []Op
	info   []opInfo
	after  []func(context.Context, *Request) error
	// asked maps a request message to its op as the caller sent it, for
	// the response chain (filled by Transform, only when plugins run).
	asked    map[any]*Op
	filtered bool

	// Most requests hold one or two ops: their storage comes with the
	// Request, one allocation instead of three.
	opsBuf  [2]Op
	infoBuf [2]opInfo
	// rec is the record each decision hands the observer: observers
	// keep no record past the call, so one per request will do.
	rec Record
}

type opInfo struct {
	derived bool
	// unseen marks an asked op whose target the gateway looked up (the
	// service behind an ID): its denial says no more than a derived one's.
	unseen bool
	narrow bool
	effect Effect
	// msg and writeBack, when set, let plugins rewrite the op: msg is the
	// request message it came from (the key of its answer's response
	// chain), writeBack writes the rewritten op into it.
	msg       any
	writeBack func(*Op)
}

// Begin starts a request for caller.
func (g *Gate) Begin(caller Identity) *Request {
	r := &Request{g: g, caller: caller}
	r.ops, r.info = r.opsBuf[:0], r.infoBuf[:0]
	return r
}

// Caller is the request's caller.
func (r *Request) Caller() Identity { return r.caller }

// Ask adds an op the caller asked for and returns its index.
func (r *Request) Ask(op Op) int {
	r.ops = append(r.ops, op)
	r.info = append(r.info, opInfo{})
	return len(r.ops) - 1
}

// AskUnseen adds an op the caller asked for by a name of its own (an ID)
// that the front resolved to what it names today, and returns its index. It
// is judged as an asked op, but its denial says why only when the caller may
// read what the op names; otherwise it tells no more than a derived op's
// (the reason would name what the ID resolves to).
func (r *Request) AskUnseen(op Op) int {
	i := r.Ask(op)
	r.info[i].unseen = true
	return i
}

// Narrow says the front can narrow the answer to asked op i (drop every
// key or event the caller may not read): a partly readable range is then
// filtered instead of denied.
func (r *Request) Narrow(i int) { r.info[i].narrow = true }

// Carry says plugins may rewrite asked op i, the op of request message msg;
// writeBack writes the rewritten op into msg. Without plugins it records
// nothing.
func (r *Request) Carry(i int, msg any, writeBack func(*Op)) {
	if r.g.plugins == nil {
		return
	}
	r.info[i].msg, r.info[i].writeBack = msg, writeBack
}

// Derive adds an op the gateway derived from the request (keys already on
// a lease, the thing an ID names), for policy only.
func (r *Request) Derive(op Op) {
	r.ops = append(r.ops, op)
	r.info = append(r.info, opInfo{derived: true})
}

// DeriveAfter registers f to derive more ops once every op added so far is
// allowed: f may look things up upstream, which the caller must have earned
// first. f adds ops with Derive; an error from f ends the request with that
// error (a *Error, or one the front maps as an upstream error).
func (r *Request) DeriveAfter(f func(ctx context.Context, r *Request) error) {
	r.after = append(r.after, f)
}

// Len is the number of ops, asked and derived.
func (r *Request) Len() int { return len(r.ops) }

// Op returns op i.
func (r *Request) Op(i int) *Op { return &r.ops[i] }

// Effect is asked op i's effect after Authorize: Allow or Filter.
func (r *Request) Effect(i int) Effect { return r.info[i].effect }

// Filtered reports whether some asked op is filtered.
func (r *Request) Filtered() bool { return r.filtered }

// Authorize decides every op: the asked ones, then what DeriveAfter derives
// from them. Any denial denies the request as a whole.
func (r *Request) Authorize(ctx context.Context) error {
	if r.caller.IsZero() {
		return &Error{Kind: KindUnauthenticated, Reason: "no authenticated caller"}
	}
	if err := r.decideFrom(ctx, 0); err != nil {
		return err
	}
	for len(r.after) > 0 {
		f := r.after[0]
		r.after = r.after[1:]
		n := len(r.ops)
		if err := f(ctx, r); err != nil {
			return err
		}
		if err := r.decideFrom(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (r *Request) decideFrom(ctx context.Context, from int) error {
	for i := from; i < len(r.ops); i++ {
		op, in := &r.ops[i], &r.info[i]
		reserved := r.g.touchesReserved(op)
		if reserved && (!in.narrow || in.derived) {
			return r.deny(ctx, op, in, "keys under "+strconv.Quote(string(r.g.reserved))+" are reserved for storegate", "")
		}
		d, err := r.g.decide(ctx, r.caller, &r.rec, op)
		if err != nil {
			r.g.log.Warn("policy error, denying", "caller", r.caller.String(), "method", op.Method,
				"resource", op.Resource.String(), "action", op.Action.String(), "err", err)
			return &Error{Kind: KindDenied, Reason: "policy evaluation failed", Op: op, Err: err}
		}
		if d.Shadow {
			r.g.log.Info("shadow deny", "caller", r.caller.String(), "method", op.Method,
				"resource", op.Resource.String(), "action", op.Action.String(),
				"key", QuoteKey(op.Keys.Key), "reason", Truncate(d.Reason, maxReason))
		}
		switch {
		case d.Effect == Allow && reserved:
			d.Effect = Filter // the reserved keys are dropped from the answer
		case d.Effect == Filter && (!in.narrow || in.derived):
			d = Decision{Effect: Deny, Reason: "only part of the range is allowed", Revision: d.Revision}
		}
		if d.Effect != Allow && d.Effect != Filter {
			reason := d.Reason
			if reason == "" {
				reason = "denied by policy"
			}
			return r.deny(ctx, op, in, reason, d.Revision)
		}
		in.effect = d.Effect
		if d.Effect == Filter {
			r.filtered = true
		}
	}
	return nil
}

// genericReason is what a caller is told when an op it did not ask for is
// denied: the full reason may name keys, owners or services it cannot see.
const genericReason = "the request touches what the caller may not use"

func (r *Request) deny(ctx context.Context, op *Op, in *opInfo, reason, _ string) error {
	r.g.log.Info("deny", "caller", r.caller.String(), "method", op.Method,
		"resource", op.Resource.String(), "action", op.Action.String(),
		"key", QuoteKey(op.Keys.Key), "derived", in.derived, "reason", Truncate(reason, maxReason))
	if in.derived || (in.unseen && !r.mayRead(ctx, op)) {
		return &Error{Kind: KindDenied, Reason: genericReason, Detail: reason, Op: op}
	}
	return &Error{Kind: KindDenied, Reason: Truncate(reason, maxReason), Detail: reason, Op: op}
}

// Allows reports whether policy allows the caller op, an op the front
// judges over an answer (one item of a list it narrows). Reserved keys and
// errors deny.
func (r *Request) Allows(ctx context.Context, op *Op) bool {
	if r.g.touchesReserved(op) {
		return false
	}
	d, err := r.g.decide(ctx, r.caller, &r.rec, op)
	return err == nil && d.Effect == Allow
}

// Recheck decides every op again under the policy in force now, for an
// answer that comes long after the request was allowed (a blocking query):
// a denial now denies the answer. An asked op allowed before and only partly
// readable now is filtered (Filtered reports true) when the front can narrow
// it.
func (r *Request) Recheck(ctx context.Context) error {
	r.after = nil
	return r.decideFrom(ctx, 0)
}

// mayRead reports whether the caller may read what unseen op names (its
// resource and target, read): only then may its denial say why. Errors deny.
func (r *Request) mayRead(ctx context.Context, op *Op) bool {
	read := *op
	read.Action, read.Value, read.ValueSize = ActionRead, nil, 0
	if op.Service != nil {
		svc := *op.Service
		svc.Checks = nil
		read.Service = &svc
	}
	if r.g.touchesReserved(&read) {
		return false
	}
	d, err := r.g.decide(ctx, r.caller, &r.rec, &read)
	return err == nil && d.Effect == Allow
}

// Transform runs the plugins' request chain over every carried op, after
// Authorize allowed the request, and writes back what they changed. A key
// a plugin moved into the reserved prefix denies the request.
func (r *Request) Transform(ctx context.Context) error {
	if r.g.plugins == nil {
		return nil
	}
	for i := range r.ops {
		in := &r.info[i]
		if in.writeBack == nil {
			continue
		}
		before := r.ops[i]
		if r.asked == nil {
			r.asked = make(map[any]*Op, 2)
		}
		r.asked[in.msg] = &before
		op := before
		if err := r.g.Transform(ctx, r.caller, &op); err != nil {
			return err
		}
		if r.g.touchesReserved(&op) && !r.g.touchesReserved(&before) {
			return &Error{Kind: KindDenied, Reason: "a plugin rewrote the request into keys reserved for storegate", Op: &before}
		}
		in.writeBack(&op)
	}
	return nil
}

// Asked returns the op of request message msg as the caller sent it, when
// plugins answer it (nil otherwise: nothing to run over its answer).
func (r *Request) Asked(msg any) *Op {
	op := r.asked[msg]
	if op == nil || !r.g.Responds(op) {
		return nil
	}
	return op
}

// Respond runs the response chain over one item answering op (from Asked).
func (r *Request) Respond(ctx context.Context, op *Op, key, value []byte) ([]byte, []byte, error) {
	return r.g.Response(ctx, r.caller, op, key, value)
}

// Readable reports whether the caller may read the single key key of
// resource res: the check a front applies to every key and event of a
// filtered answer. Reserved keys are never readable; errors deny.
func (r *Request) Readable(ctx context.Context, proto Protocol, res Resource, method string, key []byte) bool {
	return r.g.Readable(ctx, r.caller, proto, res, method, key)
}

// maxReason bounds the reason a caller is told (reasons quote keys, which
// may be megabytes long).
const maxReason = 512

// Truncate returns s cut to at most n bytes, marked when cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// QuoteKey quotes a key for logs, cut to a readable length.
func QuoteKey(k []byte) string {
	const max = 256
	if len(k) <= max {
		return strconv.Quote(string(k))
	}
	return strconv.Quote(string(k[:max])) + "…(" + strconv.Itoa(len(k)) + " bytes)"
}

// touchesReserved reports whether op names a key under the reserved prefix.
func (g *Gate) touchesReserved(op *Op) bool {
	if len(g.reserved) == 0 || (op.Keys.Key == nil && op.Keys.End == nil) {
		return false
	}
	return op.Keys.Overlaps(g.reserved)
}

// Reserved reports whether key lies under the reserved prefix.
func (g *Gate) Reserved(key []byte) bool {
	return len(g.reserved) > 0 && bytes.HasPrefix(key, g.reserved)
}
