package consul

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// readBody reads the request body whole, within limit, and puts the same
// bytes back for forwarding: what policy judged is exactly what Consul gets.
func readBody(q *request, limit int64, what string) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(q.r.Body, limit+1))
	if err != nil {
		return nil, httpError{code: http.StatusBadRequest, msg: "storegate: reading the " + what + ": " + err.Error()}
	}
	if int64(len(body)) > limit {
		return nil, httpError{code: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("Request body too large, max size: %d bytes", limit)}
	}
	setBody(q, body)
	return body, nil
}

func setBody(q *request, b []byte) {
	q.r.Body, q.r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	q.judged = true
}

// decodeCanonical decodes a JSON body into v, one of Consul's own request
// types, strictly — fields the gateway does not know (Consul's snake_case
// aliases included) are refused, not passed on for Consul to read
// differently — and forwards v re-encoded, so that Consul reads exactly
// what policy judged.
func decodeCanonical(q *request, v any, what string) error {
	body, err := readBody(q, maxRegistrationBody, what)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return httpError{code: http.StatusBadRequest, msg: "Request decode failed: " + err.Error()}
	}
	canonical, err := json.Marshal(v)
	if err != nil {
		return err
	}
	setBody(q, canonical)
	q.body = canonical
	q.r.Header.Set("Content-Type", "application/json")
	return nil
}
