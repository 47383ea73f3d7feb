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

	"github.com/hashicorp/consul/api"

	"github.com/storegate/storegate/gate"
)

// The plugins' side of the front: how each route writes a rewritten op
// back into the request it forwards (a Carry write-back), and how the
// response chain runs over Consul's answers. gate.Request runs the chains;
// nothing here runs without plugins.

// setKVPath points a KV request at the op's (possibly rewritten) key.
func setKVPath(q *request, op *gate.Op) error {
	k := string(op.Keys.Key)
	if !strings.HasPrefix(k, "/") {
		return refused(fmt.Sprintf("a plugin rewrote the key to %q, which lacks the leading /", k))
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

// kvResponse runs the response chain over a KV GET's answer (to q.asked,
// the op as the caller asked it): the entries of a JSON answer (their Key
// and base64 Value), a raw value, or a key list.
func kvResponse(_ *Server, q *request, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	ctx, op := q.r.Context(), q.asked
	key := func(k []byte) ([]byte, error) { // Consul's key <-> the op key with its "/"
		nk, _, err := q.req.Respond(ctx, op, append([]byte("/"), k...), nil)
		if err != nil {
			return nil, err
		}
		if len(nk) == 0 || nk[0] != '/' {
			return nil, errors.New("storegate: a plugin answered a key without the leading /")
		}
		return nk[1:], nil
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
		_, nv, err := q.req.Respond(ctx, op, op.Keys.Key, v)
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
		nk, nv, err := q.req.Respond(ctx, op, append([]byte("/"), k...), v)
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

// writeRaw replaces an answer's body with b.
func writeRaw(resp *http.Response, b []byte) error {
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	resp.Header.Del("Content-Encoding")
	return nil
}

// txnPlugins carries a transaction's KV ops through plugins: each one's
// op as the caller asked it (when plugins answer it) and the key it is
// stored under, so that the results (which Consul gives by stored key,
// without saying which op made them) find the op that asked for them.
type txnPlugins struct {
	ops     api.TxnOps
	kvs     []txnKVRef
	changed bool
}

type txnKVRef struct {
	asked  *gate.Op // nil: no plugin answers it
	stored []byte   // the op key (leading "/") after plugins
	tree   bool     // get-tree or delete-tree: every key under stored
}

// kv lets plugins rewrite the transaction's KV op in, asked op i.
func (t *txnPlugins) kv(s *Server, q *request, i int, in *api.KVTxnOp) {
	j := len(t.kvs)
	t.kvs = append(t.kvs, txnKVRef{tree: in.Verb == api.KVGetTree || in.Verb == api.KVDeleteTree})
	s.carry(q, i, in, func(q *request, op *gate.Op) error {
		t.kvs[j].asked = q.req.Asked(in)
		t.kvs[j].stored = op.Keys.Key
		k := string(op.Keys.Key)
		if !strings.HasPrefix(k, "/") {
			return refused(fmt.Sprintf("a plugin rewrote the key to %q, which lacks the leading /", k))
		}
		if k[1:] != in.Key || !bytes.Equal(op.Value, in.Value) {
			in.Key, in.Value, t.changed = k[1:], op.Value, true
		}
		return nil
	})
}

// finish forwards the transaction re-encoded if a plugin changed it, and
// sets up the response chain over its results.
func (t *txnPlugins) finish(q *request) error {
	if t.changed {
		b, err := json.Marshal(t.ops)
		if err != nil {
			return err
		}
		setBody(q, b)
	}
	for _, kv := range t.kvs {
		if kv.asked != nil {
			q.respond = txnResponse
			break
		}
	}
	return nil
}

// asking finds the op a result's stored key answers (nil: none that
// plugins answer).
func (t *txnPlugins) asking(key []byte) *gate.Op {
	for i := range t.kvs {
		kv := &t.kvs[i]
		if bytes.Equal(kv.stored, key) || kv.tree && bytes.HasPrefix(key, kv.stored) {
			return kv.asked
		}
	}
	return nil
}

// txnResponse runs the response chain over every KV result of the answer.
func txnResponse(_ *Server, q *request, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusConflict {
		return nil
	}
	var out map[string]json.RawMessage
	if err := readJSON(resp, &out); err != nil {
		return err
	}
	var results []map[string]map[string]json.RawMessage
	if raw, ok := out["Results"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &results); err != nil {
			return fmt.Errorf("storegate: decoding transaction results: %w", err)
		}
	}
	for _, r := range results {
		e := r["KV"]
		if e == nil {
			continue
		}
		var k string
		var v []byte
		if err := json.Unmarshal(e["Key"], &k); err != nil {
			return fmt.Errorf("storegate: decoding a KV result: %w", err)
		}
		key := append([]byte("/"), k...)
		asked := q.tx.asking(key)
		if asked == nil {
			continue
		}
		if raw, ok := e["Value"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("storegate: decoding a KV value: %w", err)
			}
		}
		nk, nv, err := q.req.Respond(q.r.Context(), asked, key, v)
		if err != nil {
			return err
		}
		if len(nk) == 0 || nk[0] != '/' {
			return errors.New("storegate: a plugin answered a key without the leading /")
		}
		e["Key"], _ = json.Marshal(string(nk[1:]))
		if v != nil || nv != nil {
			e["Value"], _ = json.Marshal(nv)
		}
	}
	if results != nil {
		b, err := json.Marshal(results)
		if err != nil {
			return err
		}
		out["Results"] = b
	}
	status := resp.StatusCode
	if err := writeJSON(resp, out, false); err != nil {
		return err
	}
	resp.StatusCode = status
	return nil
}
