package gate

import (
	"context"
	"errors"
	"fmt"
)

// Effect is the outcome of a policy decision for one op.
type Effect uint8

// Effects. The zero value denies, so a forgotten field fails closed.
const (
	Deny Effect = iota
	Allow
	// Filter allows a multi-key read or watch whose range is only partly
	// readable: the front forwards it and drops every key or event for which
	// a single-key read is not allowed.
	Filter
)

var effectNames = [...]string{Deny: "deny", Allow: "allow", Filter: "filter"}

func (e Effect) String() string { return name(effectNames[:], int(e), "effect") }

// MarshalText writes the effect's name.
func (e Effect) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// Decision is the policy's verdict on one op.
type Decision struct {
	Effect Effect
	// Reason says why an op was denied (empty when allowed).
	Reason string
	// Shadow is set when the policy denied but runs in shadow mode: the op
	// proceeds and the denial is only logged.
	Shadow bool
	// Revision identifies the policy version that decided.
	Revision string
}

// Authorizer decides whether a caller may perform an op. Implementations
// must fail closed: any evaluation error is returned and denies.
type Authorizer interface {
	Authorize(ctx context.Context, caller Identity, op *Op) (Decision, error)
}

// ErrorKind classifies a boundary error; each front maps it to its
// protocol's status (gRPC code, HTTP status).
type ErrorKind uint8

// Error kinds.
const (
	KindDenied          ErrorKind = iota + 1 // policy said no (or failed)
	KindUnauthenticated                      // no usable caller identity
	KindInvalid                              // malformed or oversized request
	KindUnavailable                          // upstream unreachable
	KindUnimplemented                        // unknown method or route
)

// Error is the typed error that crosses from the pipeline to a front.
type Error struct {
	Kind   ErrorKind
	Reason string // said to operators and, where the protocol allows, to callers
	// Detail is the full reason, for the decision log and spans only, when
	// Reason says less (a derived op's denial must not name what the caller
	// cannot read).
	Detail string
	Op     *Op   // the op that failed, if any
	Err    error // underlying cause, if any
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("gate: %s: %v", e.Reason, e.Err)
	}
	return "gate: " + e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

// Denied returns a KindDenied error for op.
func Denied(op *Op, reason string) *Error {
	return &Error{Kind: KindDenied, Reason: reason, Op: op}
}

// AsError returns err as a *Error, or nil.
func AsError(err error) *Error {
	var ge *Error
	if errors.As(err, &ge) {
		return ge
	}
	return nil
}
