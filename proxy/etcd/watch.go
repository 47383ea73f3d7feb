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

// watchServer serves etcdserverpb.Watch. A caller stream gets its own
// virtual upstream stream (watchhub.go), opened with its first allowed
// create (a caller with no rights costs etcd nothing); its watches share
// upstream watches with other callers' where they can. Creates are
// authorized one by one and each is answered exactly once, in the order
// the caller sent them.
//
// Watch IDs are the caller's to choose, so they are never trusted: every
// event is judged against the watch it is delivered under (its key must lie
// in that watch's range, and be readable when the watch is filtered),
// whatever etcd still had buffered for an earlier watch of the same ID. On
// every policy change, open watches are judged again: one no longer allowed
// is canceled with etcd's permission-denied reason.
type watchServer struct {
	pb.UnsafeWatchServer
	s *Server
}

var _ pb.WatchServer = (*watchServer)(nil)

// upWatch is what a watch stream talks to upstream: an etcd watch stream,
// or the hub's virtual one.
type upWatch interface {
	Send(*pb.WatchRequest) error
	Recv() (*pb.WatchResponse, error)
	CloseSend() error
}

// watchState is one watch the caller holds (or has asked for).
type watchState struct {
	op     gate.Op       // the create as the caller asked it
	keys   gate.KeyRange // the range its events must lie in, as they reach the caller
	filter bool          // only part of the range is readable
	asked  *gate.Op      // set when plugins answer its events
	// revoked: the gateway canceled it after a policy change; etcd's own
	// cancel answer is swallowed.
	revoked bool
	// sentFragments: a fragmented response of the watch is under way and
	// some of its parts were sent.
	sentFragments bool
}

// pendingCreate is a create awaiting its "created" answer: forwarded
// upstream (st set) or refused here (denied set), to be answered once every
// earlier forwarded create has been.
type pendingCreate struct {
	st     *watchState
	denied *pb.WatchResponse
}

type watchStream struct {
	s      *Server
	ctx    context.Context
	caller gate.Identity
	client grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]
	errc   chan error

	upMu sync.Mutex // serializes up.Send; guards up
	up   upWatch

	sendMu sync.Mutex // serializes client.Send

	mu      sync.Mutex
	pending []pendingCreate
	watches map[int64]*watchState
	// midFragment: the last response sent was a part of a fragmented
	// response and more parts follow; nothing else may be sent until then.
	midFragment bool
	deferred    []*pb.WatchResponse // sent once midFragment ends
	held        int                 // watch slots this stream holds
}

func (w *watchServer) Watch(client grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]) error {
	ctx, cancel := context.WithCancel(client.Context())
	defer cancel()
	ws := &watchStream{s: w.s, ctx: ctx, caller: caller(ctx), client: client,
		errc: make(chan error, 3), watches: map[int64]*watchState{}}
	defer ws.releaseAll()
	// The caller's requests are read on this goroutine until a create is
	// allowed; only then do the upstream's answers, policy changes and the
	// caller's further requests get goroutines of their own. An idle or
	// refused stream costs one goroutine and nothing upstream.
	err := ws.fromClient(true)
	switch {
	case errors.Is(err, errHandedOff):
		select {
		case err = <-ws.errc:
		case <-ctx.Done():
			err = nil
		}
	case errors.Is(err, io.EOF):
		return nil // half-closed without a watch: nothing will ever come
	}
	cancel()
	if err == nil || errors.Is(err, io.EOF) || isCanceled(ctx, err) {
		return nil
	}
	return err
}

// errHandedOff: the handler's goroutine handed reading the caller's
// requests to a goroutine of its own.
var errHandedOff = errors.New("etcd: watch requests are read elsewhere now")

// fromClient reads the caller's requests, authorizes creates and forwards
// what may go upstream. On the handler's goroutine it returns errHandedOff
// once the upstream stream is open, having started its successor.
func (ws *watchStream) fromClient(handler bool) error {
	for {
		req, err := ws.client.Recv()
		if err != nil {
			ws.closeUp()
			return err
		}
		switch r := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if r.CreateRequest == nil {
				continue // etcd ignores an empty create
			}
			if err := ws.create(req, r.CreateRequest); err != nil {
				return err
			}
		case *pb.WatchRequest_CancelRequest, *pb.WatchRequest_ProgressRequest:
			// Without an upstream stream the caller holds no watch: there is
			// nothing to cancel or report on.
			if err := ws.sendUp(req, false); err != nil {
				return err
			}
		default:
			// An empty or unknown request union is ignored, as etcd does.
		}
		if handler && ws.upOpen() {
			go func() {
				// A half-close ends nothing: etcd keeps delivering events
				// until the stream's context ends.
				if err := ws.fromClient(false); err != nil && !errors.Is(err, io.EOF) {
					ws.errc <- err
				}
			}()
			return errHandedOff
		}
	}
}

func (ws *watchStream) upOpen() bool {
	ws.upMu.Lock()
	defer ws.upMu.Unlock()
	return ws.up != nil
}

func (ws *watchStream) closeUp() {
	ws.upMu.Lock()
	defer ws.upMu.Unlock()
	if ws.up != nil {
		_ = ws.up.CloseSend()
	}
}

// sendUp sends req upstream; with open it first opens the upstream stream
// if there is none yet (only an allowed create may). Without it, and with
// no stream, it does nothing.
func (ws *watchStream) sendUp(req *pb.WatchRequest, open bool) error {
	ws.upMu.Lock()
	defer ws.upMu.Unlock()
	if ws.up == nil {
		if !open {
			return nil
		}
		up := ws.s.hub.open(upstreamCtx(ws.ctx))
		ws.up = up
		go func() { ws.errc <- ws.fromUpstream(up) }()
		go ws.reauthorize()
	}
	return ws.up.Send(req)
}

func denyCreate(reason string) *pb.WatchResponse {
	return &pb.WatchResponse{
		Header:       &pb.ResponseHeader{},
		WatchId:      clientv3.InvalidWatchID,
		Created:      true,
		Canceled:     true,
		CancelReason: reason,
	}
}

func (ws *watchStream) create(req *pb.WatchRequest, cr *pb.WatchCreateRequest) error {
	key := cr.Key
	if len(key) == 0 {
		key = []byte{0} // etcd's own reading of an empty watch key
	}
	op := etcdOp(gate.ResourceWatch, gate.ActionWatch, mWatch)
	op.Keys = gate.KeyRange{Key: key, End: cr.RangeEnd}
	op.PrevKV = cr.PrevKv
	q := ws.s.gate.Begin(ws.caller)
	i := q.Ask(op)
	q.Narrow(i)
	q.Carry(i, cr, func(op *gate.Op) { cr.Key, cr.RangeEnd = op.Keys.Key, op.Keys.End })
	if err := q.Authorize(ws.ctx); err != nil {
		if gate.AsError(err) == nil {
			return err
		}
		if err := ended(ws.ctx); err != nil {
			return err // the stream is ending (drain.go): not a denial
		}
		ws.s.charge(ws.caller, cr, rpctypes.ErrGRPCPermissionDenied)
		return ws.refuse(denyCreate(rpctypes.ErrPermissionDenied.Error()))
	}
	if !ws.s.limits.watches.acquire(ws.caller) {
		ws.s.charge(ws.caller, cr, rpctypes.ErrGRPCRequestTooManyRequests)
		return ws.refuse(denyCreate(rpctypes.ErrTooManyRequests.Error()))
	}
	ws.mu.Lock()
	ws.held++
	ws.mu.Unlock()
	if err := q.Transform(ws.ctx); err != nil {
		ws.releaseOne()
		if gate.AsError(err) == nil {
			return err
		}
		if err := ended(ws.ctx); err != nil {
			return err
		}
		ws.s.charge(ws.caller, cr, rpctypes.ErrGRPCPermissionDenied)
		return ws.refuse(denyCreate(rpctypes.ErrPermissionDenied.Error()))
	}
	st := &watchState{op: op, filter: q.Effect(i) == gate.Filter, asked: q.Asked(cr), keys: op.Keys}
	if st.asked == nil {
		// No plugin maps events back to the caller's keys: they arrive as
		// stored, in the range forwarded.
		fkey := cr.Key
		if len(fkey) == 0 {
			fkey = []byte{0}
		}
		st.keys = gate.KeyRange{Key: fkey, End: cr.RangeEnd}
	}
	ws.mu.Lock()
	ws.pending = append(ws.pending, pendingCreate{st: st})
	ws.mu.Unlock()
	return ws.sendUp(req, true)
}

// refuse answers a create here, after every earlier forwarded create.
func (ws *watchStream) refuse(resp *pb.WatchResponse) error {
	ws.mu.Lock()
	if len(ws.pending) > 0 || ws.midFragment {
		ws.pending = append(ws.pending, pendingCreate{denied: resp})
		ws.mu.Unlock()
		return nil
	}
	ws.sendMu.Lock()
	ws.mu.Unlock()
	defer ws.sendMu.Unlock()
	return ws.client.Send(resp)
}

// fromUpstream relays upstream responses, answering queued refusals in
// order and judging every event against the watch it is delivered under.
func (ws *watchStream) fromUpstream(up upWatch) error {
	for {
		resp, err := up.Recv()
		if err != nil {
			return err
		}
		var cancelUp []int64
		ws.mu.Lock()
		send := true
		switch {
		case resp.Created:
			// etcd answers creates in order: this answers the first create
			// forwarded and not yet answered.
			var head pendingCreate
			for i, pc := range ws.pending {
				if pc.st != nil {
					head = pc
					ws.pending = append(ws.pending[:i:i], ws.pending[i+1:]...)
					break
				}
			}
			switch {
			case head.st == nil:
				send = false // no create of ours is waiting: not the caller's
			case resp.Canceled:
				ws.releaseLocked()
			case head.st.revoked:
				// Revoked by a policy change before etcd answered.
				cancelUp = append(cancelUp, resp.WatchId)
				ws.watches[resp.WatchId] = head.st
				resp = denyCreate(rpctypes.ErrPermissionDenied.Error())
			default:
				ws.watches[resp.WatchId] = head.st
			}
		default:
			st := ws.watches[resp.WatchId]
			if resp.Canceled && st != nil {
				delete(ws.watches, resp.WatchId)
				ws.releaseLocked()
				if st.revoked {
					send = false // the caller was told already
				}
			}
			switch {
			case st == nil:
				// Events of no watch the caller holds are never delivered.
				send = len(resp.Events) == 0 && !resp.Fragment
			case st.revoked:
				send = false
			default:
				var err error
				if send, err = ws.judge(resp, st); err != nil {
					ws.mu.Unlock()
					return err
				}
			}
		}
		if err := ended(ws.ctx); err != nil {
			// Judged, perhaps, under an ended context (an event it could
			// not judge is dropped): nothing goes out, and the caller
			// resumes after the last revision it did get.
			ws.mu.Unlock()
			return err
		}
		if send {
			ws.midFragment = resp.Fragment
		}
		var queued []*pb.WatchResponse
		if !ws.midFragment {
			queued, ws.deferred = ws.deferred, nil
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
		for _, id := range cancelUp {
			if err := ws.cancelUpstream(id); err != nil {
				return err
			}
		}
	}
}

// judge runs the response chain over a response's events and keeps those
// that lie in st's range and, for a filtered watch, that the caller may
// read. It reports whether the response should still be sent: an emptied
// response is dropped unless it closes a fragmented response whose earlier
// parts were sent, or carries a cancel or compaction notice.
func (ws *watchStream) judge(resp *pb.WatchResponse, st *watchState) (bool, error) {
	had := len(resp.Events)
	kept := resp.Events[:0]
	for _, ev := range resp.Events {
		if ev.Kv == nil {
			continue
		}
		if st.asked != nil {
			// Plugins first, so that judging sees keys as the caller knows
			// them. A refused event ends the stream: it is never sent as
			// stored.
			for _, kv := range []*mvccKV{ev.Kv, ev.PrevKv} {
				if kv == nil {
					continue
				}
				k, v, err := ws.s.gate.Response(ws.ctx, ws.caller, st.asked, kv.Key, kv.Value)
				if err != nil {
					return false, ws.s.grpcError(ws.ctx, err)
				}
				kv.Key, kv.Value = k, v
			}
		}
		if !st.keys.Contains(ev.Kv.Key) {
			continue
		}
		if st.filter && !ws.s.gate.Readable(ws.ctx, ws.caller, gate.ProtocolEtcd, gate.ResourceWatch, mWatch, ev.Kv.Key) {
			continue
		}
		kept = append(kept, ev)
	}
	resp.Events = kept
	send := len(kept) > 0 || had == 0 || resp.Canceled || resp.CompactRevision != 0
	if !send && !resp.Fragment && st.sentFragments {
		send = true // the last part of a fragmented response whose start was sent
	}
	if send {
		st.sentFragments = resp.Fragment
	}
	return send, nil
}

// reauthorize judges every watch again on each policy change: a watch no
// longer allowed is canceled upstream and, for the caller, with etcd's
// permission-denied reason; one now only partly readable is filtered.
func (ws *watchStream) reauthorize() {
	for {
		changed := ws.s.gate.PolicyChanged()
		select {
		case <-ws.ctx.Done():
			return
		case <-changed:
		}
		var cancelUp []int64
		ws.mu.Lock()
		judge := func(st *watchState) (allowed bool) {
			q := ws.s.gate.Begin(ws.caller)
			i := q.Ask(st.op)
			q.Narrow(i)
			if q.Authorize(ws.ctx) != nil {
				st.revoked = true
				return false
			}
			st.filter = q.Effect(i) == gate.Filter
			return true
		}
		for id, st := range ws.watches {
			if st.revoked || judge(st) {
				continue
			}
			cancelUp = append(cancelUp, id)
			ws.deferred = append(ws.deferred, &pb.WatchResponse{Header: &pb.ResponseHeader{}, WatchId: id,
				Canceled: true, CancelReason: rpctypes.ErrPermissionDenied.Error()})
		}
		for _, pc := range ws.pending {
			if pc.st != nil && !pc.st.revoked {
				judge(pc.st)
			}
		}
		if ws.ctx.Err() != nil {
			ws.mu.Unlock()
			return // judged under an ended context: not a revocation
		}
		var now []*pb.WatchResponse
		if !ws.midFragment {
			now, ws.deferred = ws.deferred, nil
		}
		ws.sendMu.Lock()
		ws.mu.Unlock()
		var err error
		for _, r := range now {
			if err = ws.client.Send(r); err != nil {
				break
			}
		}
		ws.sendMu.Unlock()
		for _, id := range cancelUp {
			if err == nil {
				err = ws.cancelUpstream(id)
			}
		}
		if err != nil {
			ws.errc <- err
			return
		}
	}
}

func (ws *watchStream) cancelUpstream(id int64) error {
	return ws.sendUp(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{
		CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}, false)
}

// releaseLocked gives back one watch slot; ws.mu is held.
func (ws *watchStream) releaseLocked() {
	if ws.held > 0 {
		ws.held--
		ws.s.limits.watches.release(ws.caller)
	}
}

func (ws *watchStream) releaseOne() {
	ws.mu.Lock()
	ws.releaseLocked()
	ws.mu.Unlock()
}

// releaseAll gives back every slot the stream holds when it ends.
func (ws *watchStream) releaseAll() {
	ws.mu.Lock()
	for ws.held > 0 {
		ws.releaseLocked()
	}
	ws.mu.Unlock()
}
