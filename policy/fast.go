package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/policies"
)

// Evaluator names what decides a version's ops.
type Evaluator string

// Evaluators.
const (
	// EvaluatorCompiled: the shipped intentions engine, decided in Go by a
	// matcher compiled from the intentions (fast.go). Ops it declines (those
	// that name a service) still go to OPA.
	EvaluatorCompiled Evaluator = "compiled intentions"
	// EvaluatorOPA: OPA evaluates the Rego.
	EvaluatorOPA Evaluator = "OPA"
)

// fastPath decides ops for the shipped intentions engine (authz.rego,
// unmodified, and intentions.yaml) without OPA, with the same effects and
// the same reasons. It is built only when the policy is exactly that (see
// shippedEngine); any other Rego goes to OPA.
//
// Intentions are indexed by resource and action, then by the literal part
// of their source (the caller's SPIFFE ID glob), then by the literal part of
// their key globs, so that a decision looks at the intentions that can match
// it and not at all of them. A lookup by literal is one map lookup per
// distinct literal length that fits the string, which allocates nothing.
type fastPath struct {
	// own decides the ops that are not foreign; foreign the ops on what
	// another identity owns, which only intentions with owners match.
	own, foreign [numResources][numActions]*fastBucket
}

const (
	numResources = int(gate.ResourceStatus) + 1
	numActions   = int(gate.ActionAdmin) + 1
)

// fastRule is one intention.
type fastRule struct {
	name string
	deny bool
	// addresses: the intention has addresses, so it is never in the
	// allowed and denied sets of an op that names no service (authz.rego's
	// at_addresses); its covers still count.
	addresses bool
}

// fastBucket is the intentions of one resource and action, by source.
type fastBucket struct {
	bySource litIndex[*fastGroup]
}

// fastGroup is the intentions of one bucket that share a source (and, in
// the foreign index, owners).
type fastGroup struct {
	source    fastGlob
	anySource bool       // "**"
	owners    []fastGlob // foreign index: one must match the op's owner
	// keyless intentions (no keys, no services), by effect; single holds
	// those without addresses.
	keyless, keylessSingle [2][]*fastRule
	keys                   [2]litIndex[keyEntry]
}

// The effects, as indices.
const (
	fxAllow = 0
	fxDeny  = 1
)

type keyEntry struct {
	glob *fastGlob
	rule *fastRule
}

// litIndex finds the entries whose literal is a prefix of a string, and
// those whose literal extends one.
type litIndex[T any] struct {
	by    map[string][]T
	lens  []int // the distinct lengths of the literals in by, ascending
	empty []T   // literal ""
	// sorted holds every entry of by, ordered by literal (for extensions).
	sorted []litEntry[T]
}

type litEntry[T any] struct {
	lit string
	v   T
}

func (x *litIndex[T]) add(lit string, v T) {
	if lit == "" {
		x.empty = append(x.empty, v)
		return
	}
	if x.by == nil {
		x.by = map[string][]T{}
	}
	if _, ok := x.by[lit]; !ok {
		if i, found := slices.BinarySearch(x.lens, len(lit)); !found {
			x.lens = slices.Insert(x.lens, i, len(lit))
		}
	}
	x.by[lit] = append(x.by[lit], v)
	x.sorted = append(x.sorted, litEntry[T]{lit, v})
}

func (x *litIndex[T]) seal() {
	slices.SortStableFunc(x.sorted, func(a, b litEntry[T]) int { return strings.Compare(a.lit, b.lit) })
}

// prefixesOf calls f with every entry whose literal is a prefix of s ("" as
// well) until f returns false; it returns false then.
func (x *litIndex[T]) prefixesOf(s string, f func(T) bool) bool {
	for _, v := range x.empty {
		if !f(v) {
			return false
		}
	}
	for _, n := range x.lens {
		if n > len(s) {
			break
		}
		for _, v := range x.by[s[:n]] {
			if !f(v) {
				return false
			}
		}
	}
	return true
}

// extensionsOf calls f with every entry whose (non-empty) literal starts
// with s until f returns false; it returns false then.
func (x *litIndex[T]) extensionsOf(s string, f func(T) bool) bool {
	i, _ := slices.BinarySearchFunc(x.sorted, s, func(e litEntry[T], s string) int { return strings.Compare(e.lit, s) })
	for ; i < len(x.sorted) && strings.HasPrefix(x.sorted[i].lit, s); i++ {
		if !f(x.sorted[i].v) {
			return false
		}
	}
	return true
}

// shippedEngine reports whether src is the shipped intentions engine:
// exactly the shipped authz.rego, byte for byte, and an intentions file.
func shippedEngine(src *source) bool {
	if src.intentions == "" || len(src.rego) != 1 {
		return false
	}
	for _, b := range src.rego {
		return string(b) == policies.AuthzRego()
	}
	return false
}

// compileFast builds the fast path of intentions.
func compileFast(ins []intention) (*fastPath, error) {
	fp := &fastPath{}
	type groupKey struct {
		r, a           int
		foreign        bool
		source, owners string
	}
	groups := map[groupKey]*fastGroup{}
	for i := range ins {
		in := &ins[i]
		if in.services != nil {
			// Only ops that name a service can match it, and the fast path
			// sends every one of those to OPA.
			continue
		}
		rule := &fastRule{name: in.name, deny: in.deny, addresses: len(in.addresses) > 0}
		fx := fxAllow
		if in.deny {
			fx = fxDeny
		}
		src, err := compileGlob(in.source)
		if err != nil {
			return nil, err
		}
		var keys []fastGlob
		for _, k := range in.keys {
			g, err := compileGlob(k.raw)
			if err != nil {
				return nil, err
			}
			keys = append(keys, g)
		}
		var owners []fastGlob
		for _, o := range in.owners {
			g, err := compileGlob(o)
			if err != nil {
				return nil, err
			}
			owners = append(owners, g)
		}
		for _, foreign := range []bool{false, true} {
			if foreign && owners == nil {
				continue
			}
			var ownersKey string
			if foreign {
				ownersKey = strings.Join(in.owners, "\x00")
			}
			for r := 1; r < numResources; r++ {
				if in.resources != nil && !slices.Contains(in.resources, gate.Resource(r).String()) {
					continue
				}
				for a := 1; a < numActions; a++ {
					if in.actions != nil && !slices.Contains(in.actions, gate.Action(a).String()) {
						continue
					}
					k := groupKey{r, a, foreign, in.source, ownersKey}
					g := groups[k]
					if g == nil {
						g = &fastGroup{source: src, anySource: in.source == "**"}
						if foreign {
							g.owners = owners
						}
						groups[k] = g
						idx := &fp.own
						if foreign {
							idx = &fp.foreign
						}
						b := idx[r][a]
						if b == nil {
							b = &fastBucket{}
							idx[r][a] = b
						}
						lit := src.literal
						if g.anySource {
							lit = ""
						}
						b.bySource.add(lit, g)
					}
					if keys == nil {
						g.keyless[fx] = append(g.keyless[fx], rule)
						if !rule.addresses {
							g.keylessSingle[fx] = append(g.keylessSingle[fx], rule)
						}
						continue
					}
					for j := range keys {
						g.keys[fx].add(keys[j].literal, keyEntry{&keys[j], rule})
					}
				}
			}
		}
	}
	for _, g := range groups {
		g.keys[fxAllow].seal()
		g.keys[fxDeny].seal()
	}
	return fp, nil
}

// handles reports whether the fast path decides op. Ops that name a service
// (registrations, their checks and addresses) go to OPA.
func (fp *fastPath) handles(op *gate.Op) bool {
	return op.Service == nil && op.Resource > 0 && int(op.Resource) < numResources &&
		op.Action > 0 && int(op.Action) < numActions
}

// fastOp is what the fast path reads of an op, as strings aliasing the op's
// bytes (nothing is copied; nothing outlives the decision).
type fastOp struct {
	op          *gate.Op
	id          string // the caller's SPIFFE ID
	key, cover  string
	prefix      bool // the range is every key starting with cover
	ranged      bool
	bucket      *fastBucket
	foreign     bool
	owner       string
	readOrWatch bool
}

func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func (fp *fastPath) prepare(caller gate.Identity, op *gate.Op) fastOp {
	cover, exact := op.Keys.Prefix()
	o := fastOp{op: op, id: caller.String(), key: bytesString(op.Keys.Key), cover: bytesString(cover),
		prefix: exact, ranged: !op.Keys.Single(), foreign: op.Foreign, owner: op.Owner,
		readOrWatch: op.Action == gate.ActionRead || op.Action == gate.ActionWatch}
	if op.Foreign {
		o.bucket = fp.foreign[op.Resource][op.Action]
	} else {
		o.bucket = fp.own[op.Resource][op.Action]
	}
	return o
}

// groups calls f with every group whose source matches the caller (and,
// for a foreign op, one of whose owners matches the owner).
func (o *fastOp) groups(f func(*fastGroup) bool) {
	if o.bucket == nil {
		return
	}
	o.bucket.bySource.prefixesOf(o.id, func(g *fastGroup) bool {
		if !g.anySource && !g.source.tests(o.id, true) {
			return true
		}
		if o.foreign && !slices.ContainsFunc(g.owners, func(og fastGlob) bool { return og.tests(o.owner, false) }) {
			return true
		}
		return f(g)
	})
}

// rangeSets is what authz.rego asks of the sets of a multi-key range.
type rangeSets struct {
	allowCover, allowOverlap, denyCover, denyOverlap bool
}

// effect decides op: Allow, Filter or Deny.
func (o *fastOp) effect() gate.Effect {
	if !o.ranged {
		allowed, denied := false, false
		o.groups(func(g *fastGroup) bool {
			if len(g.keylessSingle[fxDeny]) > 0 || !o.keyHits(&g.keys[fxDeny], nil) {
				denied = true
				return false
			}
			if !allowed {
				allowed = len(g.keylessSingle[fxAllow]) > 0 || !o.keyHits(&g.keys[fxAllow], nil)
			}
			return true
		})
		if allowed && !denied {
			return gate.Allow
		}
		return gate.Deny
	}
	var s rangeSets
	o.groups(func(g *fastGroup) bool {
		if len(g.keyless[fxDeny]) > 0 {
			s.denyCover = true
			return false
		}
		if len(g.keyless[fxAllow]) > 0 {
			s.allowCover = true
		}
		if !o.keyRange(&g.keys[fxDeny], func(e keyEntry, covers, overlaps bool) bool {
			s.denyCover = s.denyCover || covers
			s.denyOverlap = s.denyOverlap || overlaps
			return !s.denyCover
		}) {
			return false
		}
		if s.allowCover && s.allowOverlap {
			return true
		}
		o.keyRange(&g.keys[fxAllow], func(e keyEntry, covers, overlaps bool) bool {
			s.allowCover = s.allowCover || covers
			s.allowOverlap = s.allowOverlap || overlaps
			return !(s.allowCover && s.allowOverlap)
		})
		return true
	})
	switch {
	case s.allowCover && !s.denyCover && !s.denyOverlap:
		return gate.Allow
	case o.readOrWatch && (s.allowCover || s.allowOverlap) && !s.denyCover:
		return gate.Filter
	}
	return gate.Deny
}

// keyHits calls f (when not nil) with every entry of x whose glob matches
// the op's key; with f nil it stops at the first. It returns false when it
// stopped.
func (o *fastOp) keyHits(x *litIndex[keyEntry], f func(keyEntry) bool) bool {
	return x.prefixesOf(o.key, func(e keyEntry) bool {
		if !e.glob.tests(o.key, true) {
			return true
		}
		return f != nil && f(e)
	})
}

// keyRange calls f with every entry of x that covers or may overlap the
// op's range, until f returns false; it returns false then.
func (o *fastOp) keyRange(x *litIndex[keyEntry], f func(e keyEntry, covers, overlaps bool) bool) bool {
	visit := func(e keyEntry) bool {
		c, ov := e.glob.covers(o.cover), e.glob.overlaps(o.cover)
		if !c && !ov {
			return true
		}
		return f(e, c, ov)
	}
	// Literals that are a prefix of the cover, then those that extend it
	// (a literal equal to the cover comes twice; sets do not mind).
	return x.prefixesOf(o.cover, visit) && x.extensionsOf(o.cover, visit)
}

// reason is authz.rego's reason for an op it does not allow, for the ops
// the fast path handles (no service: the check rules cannot hold).
func (o *fastOp) reason() string {
	if !o.ranged {
		var denied []string
		o.groups(func(g *fastGroup) bool {
			for _, r := range g.keylessSingle[fxDeny] {
				denied = append(denied, r.name)
			}
			o.keyHits(&g.keys[fxDeny], func(e keyEntry) bool {
				denied = append(denied, e.rule.name)
				return true
			})
			return true
		})
		if names := sortedSet(denied); len(names) > 0 {
			return fmt.Sprintf("%s %s %s", noun(names), listed(names), verb(names))
		}
		return o.noneAllows()
	}
	var covers, overlaps []string
	allowCover := false
	o.groups(func(g *fastGroup) bool {
		for _, r := range g.keyless[fxDeny] {
			covers = append(covers, r.name)
		}
		if len(g.keyless[fxAllow]) > 0 {
			allowCover = true
		}
		o.keyRange(&g.keys[fxDeny], func(e keyEntry, c, ov bool) bool {
			if c {
				covers = append(covers, e.rule.name)
			}
			if ov {
				overlaps = append(overlaps, e.rule.name)
			}
			return true
		})
		if !allowCover {
			o.keyRange(&g.keys[fxAllow], func(e keyEntry, c, _ bool) bool {
				allowCover = allowCover || c
				return !allowCover
			})
		}
		return true
	})
	if names := sortedSet(covers); len(names) > 0 {
		return fmt.Sprintf("%s %s %s every key in %s", noun(names), listed(names), verb(names), o.target())
	}
	if names := sortedSet(overlaps); allowCover && len(names) > 0 {
		return fmt.Sprintf("%s %s may match keys in %s", noun(names), listed(names), o.target())
	}
	return o.noneAllows()
}

func (o *fastOp) noneAllows() string {
	return fmt.Sprintf("no intention allows %s to %s %s", o.id, o.op.Action, o.target())
}

// target is authz.rego's target: what the op touches, for reasons.
func (o *fastOp) target() string {
	res := o.op.Resource.String()
	switch {
	case o.ranged && o.prefix && o.cover == "":
		return fmt.Sprintf("every %s key", res)
	case o.ranged && o.prefix:
		return fmt.Sprintf("%s prefix %q", res, o.cover)
	case o.ranged && o.op.Keys.All():
		return fmt.Sprintf("%s keys from %q on", res, o.key)
	case o.ranged:
		return fmt.Sprintf("%s range [%q, %q)", res, o.key, bytesString(o.op.Keys.End))
	case o.key != "":
		return fmt.Sprintf("%s %q", res, o.key)
	}
	return res
}

func sortedSet(names []string) []string {
	slices.Sort(names)
	return slices.Compact(names)
}

func noun(names []string) string {
	if len(names) == 1 {
		return "deny intention"
	}
	return "deny intentions"
}

func verb(names []string) string {
	if len(names) == 1 {
		return "matches"
	}
	return "match"
}

// listed quotes sorted names, as authz.rego's listed.
func listed(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// fastDecide is decide for the ops the fast path handles: the same
// decision, the same reason, with no OPA evaluation.
func (v *version) fastDecide(ctx context.Context, caller gate.Identity, op *gate.Op, withReason bool) (gate.Decision, error) {
	d := gate.Decision{Effect: gate.Deny, Revision: v.revision}
	if err := ctx.Err(); err != nil {
		return d, fmt.Errorf("policy: %w", err)
	}
	o := v.fast.prepare(caller, op)
	switch d.Effect = o.effect(); d.Effect {
	case gate.Allow:
		return d, nil
	case gate.Filter:
		if !withReason {
			return d, nil
		}
	}
	if len(op.Keys.Key)+len(op.Keys.End) > maxQuotedKeyBytes {
		d.Reason = reasonKeyTooLong
		return d, nil
	}
	d.Reason = o.reason()
	return d, nil
}

// evaluator is what decides v's ops.
func (v *version) evaluator() Evaluator {
	if v.fast != nil {
		return EvaluatorCompiled
	}
	return EvaluatorOPA
}

// evaluatorOf is what decides op with v.
func (v *version) evaluatorOf(op *gate.Op) Evaluator {
	if v.fast != nil && v.fast.handles(op) {
		return EvaluatorCompiled
	}
	return EvaluatorOPA
}
