package etcd

import (
	"context"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Draining. A gateway that stops ends its streams (Watch, LeaseKeepAlive,
// election Observe) itself rather than waiting for callers to close them,
// which they never do: each stream's context is canceled, so that its
// upstream stream ends too, and the caller gets errDraining, etcd's own
// "etcdserver: server stopped" (codes.Unavailable). client/v3 reads that as
// "this endpoint will be back": a watch reopens its stream and resumes
// from the revision after the last one it received, a keep-alive loop
// opens a new stream within half a second, and both land on another
// replica once the connection is told to go away (GOAWAY,
// grpc.Server.GracefulStop). Unary requests are left alone: GracefulStop
// lets them finish and their answers reach the caller.

// errDraining ends every stream of a draining front.
var errDraining = rpctypes.ErrGRPCStopped

// drainReason is the storegate-reason trailer of errDraining.
const drainReason = "the gateway is draining; reconnect to another replica"

// Drain begins draining: every open stream ends with errDraining, and
// every stream opened from now on is refused with it. It returns at once;
// streams end as their handlers notice (they give their goroutines and
// upstream streams back first). Drain may be called more than once.
func (s *Server) Drain() { s.drain.Begin() }

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.drain.Began() }

// untilDrain runs a stream's handler under a context that also ends when
// draining begins; a stream it ended so answers errDraining, whatever the
// handler made of its context ending. No goroutine waits for the drain:
// context.AfterFunc starts one only when it comes.
func (s *Server) untilDrain(ss grpc.ServerStream, run func(ctx context.Context) error) error {
	if s.Draining() {
		return s.drained(ss)
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	stop := context.AfterFunc(s.drain.Done(), func() { cancel(errDraining) })
	defer stop()
	err := run(ctx)
	if context.Cause(ctx) == errDraining {
		return s.drained(ss)
	}
	return err
}

// drained is errDraining, with its reason in a trailer.
func (s *Server) drained(ss grpc.ServerStream) error {
	ss.SetTrailer(metadata.Pairs("storegate-reason", drainReason))
	return errDraining
}

// ended is the cause of ctx's end once it has ended, nil before: a handler
// that finds its context ended says why (errDraining, the caller's
// cancellation) rather than answering as if a check had failed.
func ended(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	return context.Cause(ctx)
}
