package linearizable

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// op is a history entry for the model's own tests.
func op(client int, call, ret int64, in input, out output) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

// TestModelJudgesKnownHistories proves the model is strong enough to be
// worth running: small histories with a wrong answer of each kind (a stale
// read, a CAS that succeeded on a value the key did not hold, a delete
// that counted a key that was gone, a failed CAS reading the wrong value,
// one revision shown with two values) are rejected, and the same shapes
// with right answers, or with an unknown outcome the checker may place
// anywhere after its call, are accepted.
func TestModelJudgesKnownHistories(t *testing.T) {
	const horizon = 1000
	put := func(v string) input { return input{Kind: opPut, Key: "k", Value: v} }
	get := input{Kind: opGet, Key: "k"}
	found := func(v string, rev int64) output { return output{Found: true, Value: v, Rev: rev} }
	cases := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"read after write", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{WriteRev: 5}), op(1, 2, 3, get, found("a", 5))}, true},
		{"stale read", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{}), op(0, 2, 3, put("b"), output{}), op(1, 4, 5, get, found("a", 0))}, false},
		{"read of a write with an unknown outcome", []porcupine.Operation{
			op(0, 0, horizon, put("a"), output{Unknown: true}), op(1, 4, 5, get, found("a", 0))}, true},
		{"read of a value nobody wrote", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{}), op(1, 2, 3, get, found("z", 0))}, false},
		{"cas on the value held", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{}), op(0, 2, 3, input{Kind: opCASValue, Key: "k", Expect: "a", Value: "b"}, output{Succeeded: true}),
			op(1, 4, 5, get, found("b", 0))}, true},
		{"cas succeeding on a value not held", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{}), op(0, 2, 3, input{Kind: opCASValue, Key: "k", Expect: "x", Value: "b"}, output{Succeeded: true})}, false},
		{"failed cas reading the wrong value", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{}), op(0, 2, 3, input{Kind: opCASValue, Key: "k", Expect: "x", Value: "b"}, output{Read: true, Found: true, Value: "q"})}, false},
		{"cas on the revision read", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{WriteRev: 7}), op(1, 2, 3, input{Kind: opCASRev, Key: "k", ExpectRev: 7, Value: "b"}, output{Succeeded: true})}, true},
		{"cas on a revision overwritten", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{WriteRev: 7}), op(0, 2, 3, put("c"), output{WriteRev: 8}),
			op(1, 4, 5, input{Kind: opCASRev, Key: "k", ExpectRev: 7, Value: "b"}, output{Succeeded: true})}, false},
		{"create-if-absent on a present key", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{}), op(1, 2, 3, input{Kind: opCASRev, Key: "k", Value: "b"}, output{Succeeded: true})}, false},
		{"delete counting a key that is gone", []porcupine.Operation{
			op(0, 0, 1, input{Kind: opDelete, Key: "k"}, output{Deleted: 1})}, false},
		{"one revision, two values", []porcupine.Operation{
			op(0, 0, 1, put("a"), output{WriteRev: 7}), op(1, 2, 3, get, found("b", 7))}, false},
	}
	for _, c := range cases {
		v := check(c.ops)
		if got := v.Result == porcupine.Ok; got != c.ok {
			t.Errorf("%s: %s, want linearizable=%v", c.name, v, c.ok)
		}
	}
}
