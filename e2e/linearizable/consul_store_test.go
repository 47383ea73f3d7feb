package linearizable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/hashicorp/consul/api"
)

// consulStore is a github.com/hashicorp/consul/api KV client as a store.
// Reads are ?consistent (Consul's linearizable read mode); writes are
// plain PUT and DELETE and PUT ?cas=<ModifyIndex>. Consul has no
// compare-on-value, so casValue is not offered.
type consulStore struct{ kv *api.KV }

func (s consulStore) get(ctx context.Context, key string) (output, error) {
	p, _, err := s.kv.Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return output{}, err
	}
	if p == nil {
		return output{}, nil
	}
	return output{Found: true, Value: string(p.Value), Rev: int64(p.ModifyIndex)}, nil
}

func (s consulStore) put(ctx context.Context, key, value string) (output, error) {
	_, err := s.kv.Put(&api.KVPair{Key: key, Value: []byte(value)}, (&api.WriteOptions{}).WithContext(ctx))
	return output{}, err
}

func (s consulStore) del(ctx context.Context, key string) (output, error) {
	_, err := s.kv.Delete(key, (&api.WriteOptions{}).WithContext(ctx))
	return output{Deleted: -1}, err
}

func (s consulStore) casRev(ctx context.Context, key string, rev int64, value string) (output, error) {
	ok, _, err := s.kv.CAS(&api.KVPair{Key: key, Value: []byte(value), ModifyIndex: uint64(rev)}, (&api.WriteOptions{}).WithContext(ctx))
	return output{Succeeded: ok}, err
}

func (s consulStore) casValue(context.Context, string, string, string) (output, error, bool) {
	return output{}, nil, false
}

// consulRetryable are the texts of the agent's own 500s while it shuts
// down or has no leader yet (a restart): a client retries, and a write's
// outcome is unknown ("leadership lost while committing log" may have
// committed).
var consulRetryable = []string{"No cluster leader", "leadership lost while committing log", "raft is already shutdown",
	"node is not the leader", "shutdown waiting for leader"}

// classifyConsul accepts what a client can act on: the client's own
// timeout, a 502, 503 or 504 (the gateway or balancer without a healthy
// upstream), the agent's "no leader" 500s, and a connection the balancer
// refused, reset or closed. Any other status (a 4xx, another 500) or
// error fails the test: it could hide a wrong answer. A 502 saying the
// gateway could not connect to the agent, and a refused dial of the
// client's own, never sent the request: not applied. Everything else
// leaves a write's outcome unknown.
func classifyConsul(err error) (string, errorKind) {
	var se api.StatusError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "context deadline exceeded", outcomeUnknown
	case errors.Is(err, context.Canceled):
		return "context canceled", outcomeUnknown
	case errors.As(err, &se):
		switch se.Code {
		case 502:
			if strings.Contains(se.Body, "Consul agent unreachable: could not connect, the request was not sent") {
				return "HTTP 502 " + shorten(se.Body), notApplied
			}
			return "HTTP 502 " + shorten(se.Body), outcomeUnknown
		case 503, 504:
			return fmt.Sprintf("HTTP %d %s", se.Code, shorten(se.Body)), outcomeUnknown
		case 500:
			for _, r := range consulRetryable {
				if strings.Contains(se.Body, r) {
					return "HTTP 500 " + r, outcomeUnknown
				}
			}
		}
		return fmt.Sprintf("HTTP %d %s", se.Code, se.Body), unacceptable
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", notApplied
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed (EOF)", outcomeUnknown
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset", outcomeUnknown
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "network timeout", outcomeUnknown
	}
	return "other: " + err.Error(), unacceptable
}
