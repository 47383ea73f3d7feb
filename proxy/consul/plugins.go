package consul

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/storegate/storegate/gate"
)

// rewrite is an op of the request that plugins may change, and how the
// front writes the changed op back into the request it forwards.
type rewrite struct {
	op    int // index in request.ops
	apply func(q *request, op *gate.Op) error
	// respond, if set, makes the response hook that runs the response
	// chain over the answer to op (as the caller asked it).
	respond func(s *Server, q *request, op gate.Op) func(*http.Response) error
}

// runPlugins runs the request chain over every op the request carries, after
// policy allowed the request, writes back what the chain changed, and sets
// up the response chain for what goes back.
func (s *Server) runPlugins(q *request) error {
	if !s.gate.Plugins() {
		return nil
	}
	for _, rw := range q.rewrites {
		op := q.ops[rw.op] // a copy: policy's op stays as the caller asked
		if rw.respond != nil && s.gate.Responds(&op) {
			q.respond = rw.respond(s, q, op)
		}
		if err := s.gate.Transform(q.r.Context(), q.caller, &op); err != nil {
			return err
		}
		if err := rw.apply(q, &op); err != nil {
			return err
		}
	}
	return nil
}

// setKVPath points a KV request at the op's (possibly rewritten) key.
func setKVPath(q *request, op *gate.Op) error {
	k := string(op.Keys.Key)
	if !strings.HasPrefix(k, "/") {
		return denial("a plugin rewrote the key to " + fmt.Sprintf("%q", k) + ", which lacks the leading /")
	}
	q.r.URL.Path, q.r.URL.RawPath = "/v1/kv"+k, ""
	return nil
}

// kvRewrite writes a KV op back: its key into the path and, for a write,
// its value into the body.
func kvRewrite(q *request, op *gate.Op) error {
	if err := setKVPath(q, op); err != nil {
		return err
	}
	if op.Action == gate.ActionWrite {
		setBody(q, op.Value)
	}
	return nil
}

// kvResponse runs the response chain over a KV GET's answer: the entries of
// a JSON answer (their Key and base64 Value), a raw value, or a key list.
func kvResponse(s *Server, q *request, op gate.Op) func(*http.Response) error {
	ctx, caller := q.r.Context(), q.caller
	key := func(k []byte) ([]byte, error) { // Consul's key <-> the op key with its "/"
		nk, _, err := s.gate.Response(ctx, caller, &op, append([]byte("/"), k...), nil)
		if err != nil {
			return nil, err
		}
		if len(nk) == 0 || nk[0] != '/' {
			return nil, errors.New("storegate: a plugin answered a key without the leading /")
		}
		return nk[1:], nil
	}
	return func(resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			return nil
		}
		switch {
		case has(q, "keys"):
			var keys []string
			if err := readJSON(resp, &keys); err != nil {
				return err
			}
			for i, k := range keys {
				nk, err := key([]byte(k))
				if err != nil {
					return err
				}
				keys[i] = string(nk)
			}
			return writeJSON(resp, keys, false)
		case has(q, "raw"):
			defer resp.Body.Close()
			v, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			_, nv, err := s.gate.Response(ctx, caller, &op, op.Keys.Key, v)
			if err != nil {
				return err
			}
			return writeRaw(resp, nv)
		}
		var entries []map[string]json.RawMessage
		if err := readJSON(resp, &entries); err != nil {
			return err
		}
		for _, e := range entries {
			var k string
			var v []byte
			if err := json.Unmarshal(e["Key"], &k); err != nil {
				return fmt.Errorf("storegate: decoding a KV entry: %w", err)
			}
			if raw, ok := e["Value"]; ok && string(raw) != "null" {
				if err := json.Unmarshal(raw, &v); err != nil {
					return fmt.Errorf("storegate: decoding a KV value: %w", err)
				}
			}
			nk, nv, err := s.gate.Response(ctx, caller, &op, append([]byte("/"), k...), v)
			if err != nil {
				return err
			}
			if len(nk) == 0 || nk[0] != '/' {
				return errors.New("storegate: a plugin answered a key without the leading /")
			}
			e["Key"], _ = json.Marshal(string(nk[1:]))
			if v != nil || nv != nil {
				e["Value"], _ = json.Marshal(base64.StdEncoding.EncodeToString(nv))
			}
		}
		return writeJSON(resp, entries, false)
	}
}

// writeRaw replaces an answer's body with b.
func writeRaw(resp *http.Response, b []byte) error {
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	resp.Header.Del("Content-Encoding")
	return nil
}
