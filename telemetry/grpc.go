package telemetry

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/gate"
)

// unaryServer times a whole unary call of the etcd front (stage total).
func (m *Metrics) unaryServer(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.ObserveStage(ctx, gate.ProtocolEtcd, StageTotal, time.Since(start))
	return resp, err
}

// streamServer counts a stream as open for as long as it lasts. Streams
// are not timed: a watch's lifetime is not a latency.
func (m *Metrics) streamServer(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx := ss.Context()
	m.StreamOpened(ctx, gate.ProtocolEtcd, info.FullMethod)
	defer m.StreamClosed(ctx, gate.ProtocolEtcd, info.FullMethod)
	return h(srv, ss)
}

// unaryClient times a forwarded unary call (stage upstream) and counts it
// as an upstream error when the store failed it.
func (m *Metrics) unaryClient(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := inv(ctx, method, req, reply, cc, opts...)
	m.ObserveStage(ctx, gate.ProtocolEtcd, StageUpstream, time.Since(start))
	m.upstreamResult(ctx, err)
	return err
}

// streamClient counts a stream that could not be opened upstream.
func (m *Metrics) streamClient(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, s grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := s(ctx, desc, cc, method, opts...)
	m.upstreamResult(ctx, err)
	return cs, err
}

// upstreamResult counts err as an upstream error when its code says the
// store or the way to it failed. Answers that are the store's verdict on
// the request (not found, compacted, failed precondition, a caller's own
// cancellation) are not upstream errors.
func (m *Metrics) upstreamResult(ctx context.Context, err error) {
	if err == nil {
		return
	}
	switch c := status.Code(err); c {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown,
		codes.ResourceExhausted, codes.DataLoss, codes.Unauthenticated:
		if ctx.Err() == nil { // not the caller giving up
			m.UpstreamError(ctx, gate.ProtocolEtcd, c.String())
		}
	}
}
