package consul

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/storegate/storegate/gate"
)

// kvKey is the key as Consul reads it (the decoded path after /v1/kv/), and
// the op key: the same with a leading slash.
func kvKey(r *http.Request) (consul string, op []byte) {
	k := strings.TrimPrefix(r.URL.Path, "/v1/kv/")
	return k, []byte("/" + k)
}

func has(q *request, name string) bool {
	_, ok := q.query[name]
	return ok
}

var errMissingKey = httpError{code: http.StatusBadRequest, msg: "Missing key name"}

func (s *Server) kvGet(q *request) error {
	key, opKey := kvKey(q.r)
	op := gate.Op{Resource: gate.ResourceKV, Action: gate.ActionRead}
	var narrow responseHook
	switch {
	case has(q, "keys"):
		op.Keys = gate.KeyRange{Key: opKey, End: gate.PrefixEnd(opKey)}
		narrow = filterKeyList
	case has(q, "recurse"):
		op.Keys = gate.KeyRange{Key: opKey, End: gate.PrefixEnd(opKey)}
		narrow = filterEntries
	case key == "":
		return errMissingKey
	default:
		op.Keys = gate.KeyRange{Key: opKey}
	}
	i := q.ask(op)
	if narrow != nil {
		// A listing is narrowed to the keys the caller may read.
		q.req.Narrow(i)
		q.narrow = narrow
	}
	s.carry(q, i, q.r, kvGetRewrite)
	return nil
}

// kvGetRewrite writes a KV read back and, when plugins answer it, runs the
// response chain over the answer.
func kvGetRewrite(q *request, op *gate.Op) error {
	if q.asked = q.req.Asked(q.r); q.asked != nil {
		q.respond = kvResponse
	}
	return kvRewrite(q, op)
}

func (s *Server) kvPut(q *request) error {
	key, opKey := kvKey(q.r)
	if key == "" {
		return errMissingKey
	}
	if n := countPresent(q, "cas", "acquire", "release"); n > 1 {
		return httpError{code: http.StatusBadRequest, msg: "Conflicting flags: " + q.query.Encode()}
	}
	if has(q, "flags") {
		if _, err := strconv.ParseUint(q.query.Get("flags"), 10, 64); err != nil {
			return fmt.Errorf("invalid flags: %w", err)
		}
	}
	// The value is read whole, within Consul's limit, so that policy sees
	// its size and the forwarded body is exactly what was decided on.
	body, err := readBody(q, s.opts.MaxValueBytes, "value")
	if err != nil {
		return err
	}

	i := q.ask(gate.Op{Resource: gate.ResourceKV, Action: gate.ActionWrite, Keys: gate.KeyRange{Key: opKey}, ValueSize: len(body), Value: body})
	s.carry(q, i, q.r, kvRewrite)
	// Locking with a session: the lock must be allowed, and the session
	// must be the caller's own.
	for _, l := range []struct {
		param string
		act   gate.Action
	}{{"acquire", gate.ActionAcquire}, {"release", gate.ActionRelease}} {
		if !has(q, l.param) {
			continue
		}
		sid := q.query.Get(l.param)
		q.ask(gate.Op{Resource: gate.ResourceLock, Action: l.act, Keys: gate.KeyRange{Key: opKey}, Session: sid})
		s.useSession(q, l.act, sid)
	}
	return nil
}

func (s *Server) kvDelete(q *request) error {
	key, opKey := kvKey(q.r)
	if countPresent(q, "recurse", "cas") > 1 {
		return httpError{code: http.StatusBadRequest, msg: "Conflicting flags: " + q.query.Encode()}
	}
	op := gate.Op{Resource: gate.ResourceKV, Action: gate.ActionDelete, Keys: gate.KeyRange{Key: opKey}}
	switch {
	case has(q, "recurse"):
		op.Keys.End = gate.PrefixEnd(opKey)
	case key == "":
		return errMissingKey
	}
	s.carry(q, q.ask(op), q.r, kvRewrite)
	return nil
}

func countPresent(q *request, names ...string) int {
	n := 0
	for _, name := range names {
		if has(q, name) {
			n++
		}
	}
	return n
}

// readable reports whether the caller may read the Consul key k (never one
// of the gateway's own records: the gate reserves them).
func readable(q *request, k string) bool {
	return q.req.Readable(q.r.Context(), gate.ProtocolConsul, gate.ResourceKV, q.route, []byte("/"+k))
}

// filterEntries narrows a recurse answer (a JSON array of entries) to the
// readable ones; none left is Consul's own 404, index headers kept.
func filterEntries(_ *Server, q *request, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var entries []json.RawMessage
	if err := readJSON(resp, &entries); err != nil {
		return err
	}
	kept := entries[:0]
	for _, e := range entries {
		var k struct{ Key string }
		if err := json.Unmarshal(e, &k); err != nil {
			return fmt.Errorf("storegate: decoding a KV entry: %w", err)
		}
		if readable(q, k.Key) {
			kept = append(kept, e)
		}
	}
	markFiltered(resp, len(kept) < len(entries))
	return writeJSON(resp, kept, len(kept) == 0)
}

// markFiltered says so in the answer, as Consul's ACLs do, when the
// gateway dropped something from it.
func markFiltered(resp *http.Response, dropped bool) {
	if dropped {
		resp.Header.Set("X-Consul-Results-Filtered-By-ACLs", "true")
	}
}

// unroll makes a filtered ?keys&separator listing one the gateway rolls up
// itself: Consul would roll keys the caller cannot read into an entry that
// tells of them, so the gateway asks for every key under the prefix, drops
// those the caller may not read, and rolls up the rest as Consul does.
func unroll(q *request) {
	sep := separator(q)
	if !has(q, "keys") || sep == "" {
		return
	}
	q.rollup = sep
	delete(q.query, "separator")
	delete(q.query, "seperator")
	q.r.URL.RawQuery = q.query.Encode()
}

// rollUp is Consul's key listing with a separator (agent/consul
// kvs_endpoint.go, ListKeys), which Consul's own ACLs also apply before
// rolling up: a key with the separator after prefix is cut just after its
// first one, and each cut key is listed once.
func rollUp(keys []string, prefix, sep string) []string {
	out := keys[:0]
	seen := map[string]bool{}
	for _, k := range keys {
		if len(k) >= len(prefix) {
			if i := strings.Index(k[len(prefix):], sep); i >= 0 {
				k = k[:len(prefix)+i+len(sep)]
				if seen[k] {
					continue
				}
				seen[k] = true
			}
		}
		out = append(out, k)
	}
	return out
}

// separator is the ?keys listing's separator as Consul reads it (the
// historic "seperator" spelling, then "separator").
func separator(q *request) string {
	sep := ""
	if has(q, "seperator") {
		sep = q.query.Get("seperator")
	}
	if has(q, "separator") {
		sep = q.query.Get("separator")
	}
	return sep
}

// filterKeyList narrows a keys answer (a JSON array of key names).
func filterKeyList(_ *Server, q *request, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var keys []string
	if err := readJSON(resp, &keys); err != nil {
		return err
	}
	kept := keys[:0]
	for _, k := range keys {
		if readable(q, k) {
			kept = append(kept, k)
		}
	}
	dropped := len(kept) < len(keys)
	if q.rollup != "" {
		kept = rollUp(kept, strings.TrimPrefix(q.r.URL.Path, "/v1/kv/"), q.rollup)
	}
	markFiltered(resp, dropped)
	return writeJSON(resp, kept, len(kept) == 0)
}

// readJSON decodes the answer's body into v. The body is read to its end
// (a decoder would stop at the value's last byte), so that its connection
// to the agent goes back to the pool.
func readJSON(resp *http.Response, v any) error {
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		return fmt.Errorf("storegate: decoding Consul's answer: %w", err)
	}
	return nil
}

func writeJSON(resp *http.Response, v any, notFound bool) error {
	var b []byte
	if notFound {
		resp.StatusCode, resp.Status = http.StatusNotFound, "404 Not Found"
		resp.Header.Del("Content-Type")
	} else {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	resp.Header.Del("Content-Encoding")
	return nil
}
