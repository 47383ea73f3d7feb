package linearizable

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// opKind is what a client asked of the store.
type opKind int

const (
	opGet opKind = iota
	opPut
	opDelete
	// opCASValue puts Value if the key holds Expect (etcd: a Txn
	// comparing the value).
	opCASValue
	// opCASRev puts Value if the key's last write is the one at
	// ExpectRev (etcd: a Txn comparing mod_revision; Consul: ?cas=
	// ModifyIndex); ExpectRev 0 means "only if the key is absent".
	opCASRev
)

func (k opKind) String() string {
	return [...]string{"get", "put", "delete", "cas-value", "cas-rev"}[k]
}

// input is one operation as the client issued it.
type input struct {
	Kind      opKind
	Key       string
	Value     string // put and CAS: the new value, unique in the run
	Expect    string // opCASValue
	ExpectRev int64  // opCASRev
}

// output is what the client saw come back.
type output struct {
	// Unknown: the call failed in a way that leaves its outcome open
	// (timeout, Unavailable, a cut connection): it may or may not have
	// been applied. Its return time is the end of the history.
	Unknown bool
	// Found, Value and Rev are a read: Get, or the read a failed etcd CAS
	// does in its else branch (Read set).
	Found bool
	Value string
	Rev   int64 // etcd mod_revision / Consul ModifyIndex of the value
	Read  bool  // a CAS output carries a read
	// Succeeded is a CAS's answer.
	Succeeded bool
	// Deleted is etcd's count of deleted keys; -1 when the API does not
	// say (Consul).
	Deleted int64
	// WriteRev is the revision etcd reports for a put that happened
	// (Put, or a CAS that succeeded); 0 when unknown.
	WriteRev int64
}

// keyState is one key in the model: absent, or holding Value.
type keyState struct {
	Exists bool
	Value  string
}

// revIndex maps each (key, revision) observed in a history to the value
// that write put. Values are unique per write, so a revision compare is a
// compare with the value written at that revision; checkRevisions first
// proves the mapping is a bijection.
type revIndex map[string]map[int64]string

// kvModel is the sequential specification of a small key-value store,
// partitioned by key (every operation touches one key).
func kvModel(revs revIndex) porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			for _, op := range h {
				k := op.Input.(input).Key
				byKey[k] = append(byKey[k], op)
			}
			keys := make([]string, 0, len(byKey))
			for k := range byKey {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var out [][]porcupine.Operation
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() any { return keyState{} },
		Step: func(s, in, out any) (bool, any) {
			return step(revs, s.(keyState), in.(input), out.(output))
		},
		DescribeOperation: func(in, out any) string { return describe(in.(input), out.(output)) },
		DescribeState: func(s any) string {
			if st := s.(keyState); st.Exists {
				return fmt.Sprintf("%q", st.Value)
			}
			return "absent"
		},
	}
}

// step applies one operation to a key's state, and says whether the output
// is one the store could have given.
func step(revs revIndex, s keyState, in input, out output) (bool, any) {
	switch in.Kind {
	case opGet:
		return readMatches(s, out), s
	case opPut:
		return true, keyState{Exists: true, Value: in.Value}
	case opDelete:
		if !out.Unknown && out.Deleted >= 0 && (out.Deleted == 1) != s.Exists {
			return false, s
		}
		return true, keyState{}
	case opCASValue, opCASRev:
		var holds bool
		if in.Kind == opCASValue {
			holds = s.Exists && s.Value == in.Expect
		} else if in.ExpectRev == 0 {
			holds = !s.Exists
		} else {
			v, known := revs[in.Key][in.ExpectRev]
			if !known {
				return false, s // a revision no read ever showed: a test bug
			}
			holds = s.Exists && s.Value == v
		}
		next := s
		if holds {
			next = keyState{Exists: true, Value: in.Value}
		}
		if out.Unknown {
			return true, next
		}
		if out.Succeeded != holds {
			return false, s
		}
		if !holds && out.Read && !readMatches(s, out) {
			return false, s
		}
		return true, next
	}
	return false, s
}

// readMatches reports whether a read's output shows state s.
func readMatches(s keyState, out output) bool {
	if out.Found != s.Exists {
		return false
	}
	return !s.Exists || out.Value == s.Value
}

func describe(in input, out output) string {
	var call string
	switch in.Kind {
	case opGet:
		call = fmt.Sprintf("get(%s)", in.Key)
	case opPut:
		call = fmt.Sprintf("put(%s, %s)", in.Key, in.Value)
	case opDelete:
		call = fmt.Sprintf("delete(%s)", in.Key)
	case opCASValue:
		call = fmt.Sprintf("cas(%s, value=%s → %s)", in.Key, in.Expect, in.Value)
	case opCASRev:
		call = fmt.Sprintf("cas(%s, rev=%d → %s)", in.Key, in.ExpectRev, in.Value)
	}
	switch {
	case out.Unknown:
		return call + " → unknown"
	case in.Kind == opGet && !out.Found:
		return call + " → absent"
	case in.Kind == opGet:
		return fmt.Sprintf("%s → %s@%d", call, out.Value, out.Rev)
	case in.Kind == opDelete:
		return fmt.Sprintf("%s → deleted %d", call, out.Deleted)
	case in.Kind == opCASValue || in.Kind == opCASRev:
		if out.Succeeded {
			return call + " → ok"
		}
		if out.Read && out.Found {
			return fmt.Sprintf("%s → failed, holds %s", call, out.Value)
		}
		if out.Read {
			return call + " → failed, absent"
		}
		return call + " → failed"
	}
	return call + " → ok"
}
