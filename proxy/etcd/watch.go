package etcd

import (
	"context"
	"errors"
	"io"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/storegate/storegate/gate"
)

// watchServer serves etcdserverpb.Watch. Each caller stream gets its own
// upstream stream; creates are authorized one by one, and every create is
// answered exactly once, in the order the caller sent them.
type watchServer struct {
	pb.UnsafeWatchServer
	s *Server
}

var _ pb.WatchServer = (*watchServer)(nil)

// pendingCreate is a create request awaiting its "created" answer: either
// forwarded upstream (denied == nil) or denied here, to be answered once
// every earlier forwarded create has been.
type pendingCreate struct {
	filter bool
	denied *pb.WatchResponse
	// asked is the create's op as the caller sent it, when plugins answer
	// its events (the response chain runs over every event).
	asked *gate.Op
}

type watchStream struct {
	s      *Server
	ctx    context.Context
	caller gate.Identity
	client grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]

	sendMu sync.Mutex // serializes client.Send

	mu       sync.Mutex
	pending  []pendingCreate
	filtered map[int64]*fragmentState // watch IDs whose events are filtered
	// answered maps watch IDs whose events plugins see to their create op.
	answered map[int64]*gate.Op
	// midFragment: the last response sent was a part of a fragmented
	// response and more parts follow; nothing else may be sent until then.
	midFragment bool
}

// fragmentState tracks a filtered watch's fragmented response in flight.
type fragmentState struct {
	sentFragments bool
}

func (w *watchServer) Watch(client grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]) error {
	ctx, cancel := context.WithCancel(client.Context())
	defer cancel()
	up, err := w.s.up.watch.Watch(upstreamCtx(ctx))
	if err != nil {
		return err
	}
	ws := &watchStream{s: w.s, ctx: ctx, caller: caller(ctx), client: client, filtered: map[int64]*fragmentState{}}

	errc := make(chan error, 2)
	go func() {
		// A half-close ends nothing: etcd keeps delivering events until the
		// stream's context ends.
		if err := ws.fromClient(up); err != nil && !errors.Is(err, io.EOF) {
			errc <- err
		}
	}()
	go func() { errc <- ws.fromUpstream(up) }()
	err = <-errc
	cancel()
	if err == nil || errors.Is(err, io.EOF) || isCanceled(ctx, err) {
		return nil
	}
	return err
}

// fromClient reads the caller's requests, authorizes creates and forwards
// what may go upstream.
func (ws *watchStream) fromClient(up grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse]) error {
	defer up.CloseSend()
	for {
		req, err := ws.client.Recv()
		if err != nil {
			return err
		}
		switch r := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if r.CreateRequest == nil {
				continue // etcd ignores an empty create
			}
			if err := ws.create(up, req, r.CreateRequest); err != nil {
				return err
			}
		case *pb.WatchRequest_CancelRequest, *pb.WatchRequest_ProgressRequest:
			if err := up.Send(req); err != nil {
				return err
			}
		default:
			// An empty or unknown request union is ignored, as etcd does.
		}
	}
}

func (ws *watchStream) create(up grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse], req *pb.WatchRequest, cr *pb.WatchCreateRequest) error {
	key := cr.Key
	if len(key) == 0 {
		key = []byte{0} // etcd's own reading of an empty watch key
	}
	op := etcdOp(gate.ResourceWatch, gate.ActionWatch, mWatch)
	op.Keys = gate.KeyRange{Key: key, End: cr.RangeEnd}
	op.PrevKV = cr.PrevKv
	ops := [1]gate.Op{op}
	var eff [1]gate.Effect
	if err := ws.s.gate.Check(ws.ctx, ws.caller, ops[:], eff[:]); err != nil {
		if gate.AsError(err) == nil {
			return err
		}
		denied := &pb.WatchResponse{
			Header:       &pb.ResponseHeader{},
			WatchId:      clientv3.InvalidWatchID,
			Created:      true,
			Canceled:     true,
			CancelReason: rpctypes.ErrPermissionDenied.Error(),
		}
		ws.mu.Lock()
		if len(ws.pending) > 0 || ws.midFragment {
			ws.pending = append(ws.pending, pendingCreate{denied: denied})
			ws.mu.Unlock()
			return nil
		}
		ws.sendMu.Lock()
		ws.mu.Unlock()
		defer ws.sendMu.Unlock()
		return ws.client.Send(denied)
	}
	pc := pendingCreate{filter: eff[0] == gate.Filter}
	if ws.s.gate.Plugins() {
		asked := ops[0]
		op := asked
		if err := ws.s.gate.Transform(ws.ctx, ws.caller, &op); err != nil {
			return ws.s.grpcError(ws.ctx, err)
		}
		cr.Key, cr.RangeEnd = op.Keys.Key, op.Keys.End
		if ws.s.gate.Responds(&asked) {
			pc.asked = &asked
		}
	}
	ws.mu.Lock()
	ws.pending = append(ws.pending, pc)
	ws.mu.Unlock()
	return up.Send(req)
}

// fromUpstream relays upstream responses, answering queued denials in order
// and filtering the events of partly readable watches.
func (ws *watchStream) fromUpstream(up grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse]) error {
	for {
		resp, err := up.Recv()
		if err != nil {
			return err
		}
		ws.mu.Lock()
		send := true
		if resp.Created {
			var head pendingCreate
			if len(ws.pending) > 0 {
				head, ws.pending = ws.pending[0], ws.pending[1:]
			}
			if head.filter && !resp.Canceled {
				ws.filtered[resp.WatchId] = &fragmentState{}
			}
			if head.asked != nil && !resp.Canceled {
				if ws.answered == nil {
					ws.answered = map[int64]*gate.Op{}
				}
				ws.answered[resp.WatchId] = head.asked
			}
		} else {
			fs, filtered := ws.filtered[resp.WatchId]
			asked := ws.answered[resp.WatchId]
			if resp.Canceled {
				delete(ws.filtered, resp.WatchId)
				delete(ws.answered, resp.WatchId)
			}
			if asked != nil {
				// Plugins first, so that filtering judges keys as the
				// caller knows them. A refused event ends the stream:
				// it is never sent as stored.
				for _, ev := range resp.Events {
					if err := ws.s.respondKVs(ws.ctx, asked, ev.Kv, ev.PrevKv); err != nil {
						ws.mu.Unlock()
						return err
					}
				}
			}
			if filtered {
				send = ws.filterEvents(resp, fs)
			}
		}
		var queued []*pb.WatchResponse
		if send {
			ws.midFragment = resp.Fragment
		}
		if !ws.midFragment {
			for len(ws.pending) > 0 && ws.pending[0].denied != nil {
				queued = append(queued, ws.pending[0].denied)
				ws.pending = ws.pending[1:]
			}
		}
		ws.sendMu.Lock()
		ws.mu.Unlock()
		err = func() error {
			defer ws.sendMu.Unlock()
			if send {
				if err := ws.client.Send(resp); err != nil {
					return err
				}
			}
			for _, d := range queued {
				if err := ws.client.Send(d); err != nil {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
}

// filterEvents drops the events the caller may not read and reports whether
// the response should still be sent: an emptied response is dropped unless
// it closes a fragmented response whose earlier parts were sent, or carries
// a cancel or compaction notice.
func (ws *watchStream) filterEvents(resp *pb.WatchResponse, fs *fragmentState) bool {
	had := len(resp.Events)
	kept := resp.Events[:0]
	for _, ev := range resp.Events {
		if ev.Kv != nil && ws.s.gate.Readable(ws.ctx, ws.caller, gate.ProtocolEtcd, gate.ResourceWatch, mWatch, ev.Kv.Key) {
			kept = append(kept, ev)
		}
	}
	resp.Events = kept
	send := len(kept) > 0 || had == 0 || resp.Canceled || resp.CompactRevision != 0
	if !send && !resp.Fragment && fs.sentFragments {
		send = true // the last part of a fragmented response whose start was sent
	}
	if send {
		fs.sentFragments = resp.Fragment
	}
	return send
}
