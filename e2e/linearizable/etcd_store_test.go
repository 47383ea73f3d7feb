package linearizable

import (
	"context"
	"errors"
	"regexp"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// etcdStore is a client/v3 client as a store.
type etcdStore struct{ c *clientv3.Client }

func (s etcdStore) get(ctx context.Context, key string) (output, error) {
	r, err := s.c.Get(ctx, key)
	if err != nil {
		return output{}, err
	}
	if len(r.Kvs) == 0 {
		return output{}, nil
	}
	return output{Found: true, Value: string(r.Kvs[0].Value), Rev: r.Kvs[0].ModRevision}, nil
}

func (s etcdStore) put(ctx context.Context, key, value string) (output, error) {
	r, err := s.c.Put(ctx, key, value)
	if err != nil {
		return output{}, err
	}
	return output{WriteRev: r.Header.Revision}, nil
}

func (s etcdStore) del(ctx context.Context, key string) (output, error) {
	r, err := s.c.Delete(ctx, key)
	if err != nil {
		return output{}, err
	}
	return output{Deleted: r.Deleted}, nil
}

func (s etcdStore) casRev(ctx context.Context, key string, rev int64, value string) (output, error) {
	return s.txn(ctx, key, clientv3.Compare(clientv3.ModRevision(key), "=", rev), value)
}

func (s etcdStore) casValue(ctx context.Context, key, expect, value string) (output, error, bool) {
	out, err := s.txn(ctx, key, clientv3.Compare(clientv3.Value(key), "=", expect), value)
	return out, err, true
}

// txn puts value if cmp holds, and reads the key otherwise.
func (s etcdStore) txn(ctx context.Context, key string, cmp clientv3.Cmp, value string) (output, error) {
	r, err := s.c.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, value)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return output{}, err
	}
	if r.Succeeded {
		return output{Succeeded: true, WriteRev: r.Header.Revision}, nil
	}
	out := output{Read: true}
	if len(r.Responses) == 1 {
		if rr := r.Responses[0].GetResponseRange(); rr != nil && len(rr.Kvs) == 1 {
			out.Found, out.Value, out.Rev = true, string(rr.Kvs[0].Value), rr.Kvs[0].ModRevision
		}
	}
	return out, nil
}

// etcdRetryable are etcd's own errors that say "try again" (all carry
// codes.Unavailable but for the throttle's ResourceExhausted): a client
// can act on them, and the request may or may not have been applied.
var etcdRetryable = []error{
	rpctypes.ErrGRPCNoLeader, rpctypes.ErrGRPCLeaderChanged, rpctypes.ErrGRPCStopped,
	rpctypes.ErrGRPCTimeout, rpctypes.ErrGRPCTimeoutDueToLeaderFail, rpctypes.ErrGRPCTimeoutDueToConnectionLost,
	rpctypes.ErrGRPCTimeoutWaitAppliedIndex, rpctypes.ErrGRPCUnhealthy, rpctypes.ErrGRPCRequestTooManyRequests,
}

// classifyEtcd accepts Unavailable, DeadlineExceeded and Canceled (as gRPC
// codes or the client's context errors) and etcd's retryable errors; any
// other error is one the client could not act on, or one hiding a wrong
// answer.
// All of them leave a write's outcome unknown.
func classifyEtcd(err error) (string, errorKind) {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "context deadline exceeded", outcomeUnknown
	case errors.Is(err, context.Canceled):
		return "context canceled", outcomeUnknown
	}
	st, ok := status.FromError(err)
	if !ok {
		return "not a gRPC status: " + err.Error(), unacceptable
	}
	for _, r := range etcdRetryable {
		if rs, _ := status.FromError(r); st.Code() == rs.Code() && st.Message() == rs.Message() {
			return st.Code().String() + " " + st.Message(), outcomeUnknown
		}
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return st.Code().String() + " " + shorten(st.Message()), outcomeUnknown
	}
	return st.Code().String() + " " + st.Message(), unacceptable
}

// shorten keeps an error message's stable head for the tally (transport
// messages carry addresses and ports).
func shorten(msg string) string {
	msg = addrRe.ReplaceAllString(msg, "ADDR")
	if len(msg) > 90 {
		return msg[:90] + "…"
	}
	return msg
}

var addrRe = regexp.MustCompile(`127\.0\.0\.1:\d+`)
