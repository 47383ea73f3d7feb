package etcd

import (
	"context"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
)

// DefaultRequestTimeout bounds a unary upstream call that has no deadline
// of its own when UpstreamConfig.RequestTimeout is zero.
const DefaultRequestTimeout = 30 * time.Second

// waitsByDesign are the unary methods that block until something happens
// (a lock is free, a campaign is won), as long as the caller wants: they
// keep the caller's context as it is.
var waitsByDesign = map[string]bool{
	v3lockpb.Lock_Lock_FullMethodName:             true,
	v3electionpb.Election_Campaign_FullMethodName: true,
}

// boundedConn gives every unary call without a deadline one of d. etcd's
// client waits for a ready connection (WaitForReady) and retries, so a call
// to a hung cluster (every member stopped, its sockets still open) would
// otherwise wait as long as its caller does, and for a caller without a
// deadline forever. A caller's own deadline, shorter or longer, is kept.
// The deadline is set here, outside etcd's retry interceptor, so that it
// bounds the call with its retries, not each attempt (the interceptor
// retries an attempt whose own deadline passed). The call then ends with
// DeadlineExceeded, which an etcd client reports as "context deadline
// exceeded". The gateway's own lookups before a decision (lease owners,
// read checks) run under the request's context and these connections, so
// they are bounded too. Streams are not touched.
type boundedConn struct {
	grpc.ClientConnInterface
	d time.Duration
}

// bounded wraps cc (d 0: DefaultRequestTimeout).
func bounded(cc grpc.ClientConnInterface, d time.Duration) boundedConn {
	if d <= 0 {
		d = DefaultRequestTimeout
	}
	return boundedConn{ClientConnInterface: cc, d: d}
}

// Invoke runs a unary call, bounded by d when ctx has no deadline.
func (c boundedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if _, ok := ctx.Deadline(); ok || waitsByDesign[method] {
		return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
	}
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}
