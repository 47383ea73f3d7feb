package etcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Watch coalescing. Callers watching the same range from "now" share one
// upstream watch, as etcd's own grpc-proxy does: a caller's watch stream
// (watch.go, which judges every event for that caller alone) talks to a
// virtual stream (vstream) that answers like an etcd watch stream, and
// the virtual stream subscribes each of its watches to a feed.
//
// A feed is one upstream watch on an upstream stream of its own:
//   - a shared feed serves every create with start_revision 0 and the same
//     key, range end, prev_kv, filters, progress_notify, fragment and
//     require-leader flag, and a create that resumes right after the last
//     revision the feed delivered; its stream's context is the hub's, not
//     the first caller's, and it ends when its last subscriber leaves;
//   - a private feed serves one create that asks for other history (or a
//     resume by client/v3 after a reconnect from further back), under the
//     caller's context.
//
// One upstream stream per feed keeps feeds apart: a stream error or a
// progress request concerns that one watch, and a progress answer (etcd
// gives one only when every watcher of the stream is synced) is exact for
// it.
//
// Every subscriber gets its own copy of each response (new responses,
// events and key-values; byte slices are shared, nothing mutates them in
// place), since watch.go and plugins rewrite them per caller. A shared
// feed never waits for a subscriber: one whose queue is full has its
// virtual stream ended with errWatchBehind, which client/v3 retries,
// resuming after the last revision it received (a resume from further
// back than the feed takes a private feed).

// watchQueueLen bounds the responses queued for one virtual stream.
const watchQueueLen = 1024

// errWatchBehind ends a virtual stream that fell behind a shared feed.
// codes.Unavailable: client/v3 reopens the stream and resumes every watch
// from the revision after the last one it received.
var errWatchBehind = status.Error(codes.Unavailable, "storegate: watch fell behind; resume from the last revision received")

// watchHub holds the shared feeds.
type watchHub struct {
	up       func(ctx context.Context) (upWatch, error)
	ctx      context.Context // the shared feeds' lifetime
	queueLen atomic.Int64

	mu    sync.Mutex
	feeds map[feedKey]*feed
}

// newWatchHub returns a hub opening upstream streams with up. Shared
// feeds live under ctx (the server's lifetime); each also ends with its
// last subscriber.
func newWatchHub(ctx context.Context, up func(ctx context.Context) (upWatch, error)) *watchHub {
	h := &watchHub{up: up, ctx: ctx, feeds: map[feedKey]*feed{}}
	h.queueLen.Store(watchQueueLen)
	return h
}

// feedKey is everything of a create that changes what etcd sends.
type feedKey struct {
	key, end      string
	prevKV        bool
	filters       string
	progress      bool
	fragment      bool
	requireLeader bool
}

// shared reports the feeds in use (for tests).
func (h *watchHub) shared() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.feeds)
}

// open returns a virtual watch stream under ctx (the caller's, as
// upstreamCtx made it).
func (h *watchHub) open(ctx context.Context) *vstream {
	vs := &vstream{hub: h, ctx: ctx, changed: make(chan struct{}), done: make(chan struct{}), subs: map[int64]*vsub{}}
	// Held, so that the stream cannot end before stopAfter is set.
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vs.stopAfter = context.AfterFunc(ctx, func() { vs.fail(nil, true) })
	return vs
}

// feed is one upstream watch and its subscribers.
type feed struct {
	hub    *watchHub
	key    feedKey
	shared bool
	cancel context.CancelFunc

	sendMu sync.Mutex
	up     upWatch

	// mu is taken before hub.mu and before any vstream's mu, never
	// while hub.mu is held.
	mu      sync.Mutex
	done    bool
	created bool
	hdr     *pb.ResponseHeader // the last header seen
	// rev: every event of the watch up to it has been delivered (the
	// created answer's revision, a progress answer's, the last event's).
	// An events response's header does not say as much: etcd sends a
	// watch catching up its events in batches, each under the store's
	// current revision.
	rev     int64
	subs    map[*vsub]struct{}
	waiters map[*vstream]struct{} // progress requests to answer
	frag    []*pb.WatchResponse   // parts of a fragmented response so far
}

// vsub is one watch of a virtual stream, subscribed to a feed.
type vsub struct {
	vs       *vstream
	id       int64         // the watch ID the caller knows
	f        *feed         // set once (attach), under vs.mu
	answered chan struct{} // closed once its created answer is queued
	// live (guarded by vs.mu): created and not ended; only a live watch's
	// responses are queued.
	live bool
}

// attach makes f sub's feed, unless sub's stream has ended (it then
// never joins: nothing would make it leave).
func (sub *vsub) attach(f *feed) bool {
	sub.vs.mu.Lock()
	defer sub.vs.mu.Unlock()
	if sub.vs.ended {
		return false
	}
	sub.f = f
	return true
}

func requiresLeader(ctx context.Context) bool {
	md, _ := metadata.FromOutgoingContext(ctx)
	v := md.Get(rpctypes.MetadataRequireLeaderKey)
	return len(v) > 0 && v[0] == rpctypes.MetadataHasLeader
}

// sharable reports whether etcd would accept cr's range; a create it
// would refuse goes to a private feed, so that etcd answers it itself.
func sharable(cr *pb.WatchCreateRequest) bool {
	if cr.StartRevision < 0 {
		return false
	}
	key := cr.Key
	if len(key) == 0 {
		key = []byte{0}
	}
	end := cr.RangeEnd
	if len(end) == 1 && end[0] == 0 {
		return true // from key on
	}
	return len(end) == 0 || string(key) < string(end)
}

// subscribe attaches sub to its feed and starts the feed if it is new.
// sub's created answer is queued once the feed's upstream watch answers.
func (h *watchHub) subscribe(ctx context.Context, sub *vsub, cr *pb.WatchCreateRequest) {
	fwd := &pb.WatchCreateRequest{Key: cr.Key, RangeEnd: cr.RangeEnd, StartRevision: cr.StartRevision,
		ProgressNotify: cr.ProgressNotify, Filters: cr.Filters, PrevKv: cr.PrevKv, Fragment: cr.Fragment}
	if !sharable(cr) {
		h.private(ctx, sub, fwd)
		return
	}
	key := feedKey{key: string(cr.Key), end: string(cr.RangeEnd), prevKV: cr.PrevKv, filters: fmt.Sprint(cr.Filters),
		progress: cr.ProgressNotify, fragment: cr.Fragment, requireLeader: requiresLeader(ctx)}
	for {
		h.mu.Lock()
		f := h.feeds[key]
		if f == nil {
			if cr.StartRevision != 0 {
				h.mu.Unlock()
				h.private(ctx, sub, fwd)
				return
			}
			break // h.mu still held
		}
		h.mu.Unlock()
		f.mu.Lock()
		if f.done {
			// Freed meanwhile (it has left the map): look again.
			f.mu.Unlock()
			continue
		}
		if cr.StartRevision != 0 && (!f.created || f.hdr == nil || cr.StartRevision != f.rev+1) {
			// History the feed has passed (or has not reached): a watch
			// of its own. One resuming right after the feed's last
			// revision (a client/v3 watch that was caught up, after a
			// reconnect) joins: what the feed delivers from now on is
			// exactly what it asks for.
			f.mu.Unlock()
			h.private(ctx, sub, fwd)
			return
		}
		if !sub.attach(f) {
			f.mu.Unlock()
			return
		}
		f.subs[sub] = struct{}{}
		if f.created {
			f.answerCreated(sub)
		}
		f.mu.Unlock()
		return
	}
	fctx, cancel := context.WithCancel(h.ctx)
	if key.requireLeader {
		fctx = metadata.NewOutgoingContext(fctx, metadata.Pairs(rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader))
	} else {
		fctx = metadata.NewOutgoingContext(fctx, nil)
	}
	f := &feed{hub: h, key: key, shared: true, cancel: cancel, subs: map[*vsub]struct{}{sub: {}}}
	if !sub.attach(f) {
		h.mu.Unlock()
		cancel()
		return
	}
	h.feeds[key] = f
	h.mu.Unlock()
	f.start(fctx, fwd)
}

// private starts a feed of sub's own under its stream's context.
func (h *watchHub) private(ctx context.Context, sub *vsub, cr *pb.WatchCreateRequest) {
	fctx, cancel := context.WithCancel(ctx)
	f := &feed{hub: h, cancel: cancel, subs: map[*vsub]struct{}{sub: {}}}
	if !sub.attach(f) {
		cancel()
		return
	}
	f.start(fctx, cr)
}

// start opens the feed's upstream stream and sends its create.
func (f *feed) start(ctx context.Context, cr *pb.WatchCreateRequest) {
	up, err := f.hub.up(ctx)
	if err == nil {
		f.sendMu.Lock()
		f.up = up
		err = up.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}})
		f.sendMu.Unlock()
	}
	if err != nil {
		if up != nil {
			// A failed Send: the stream's own error is Recv's.
			if _, rerr := up.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
				err = rerr
			}
		}
		f.fail(err)
		return
	}
	go f.run(up)
}

func (f *feed) run(up upWatch) {
	for {
		resp, err := up.Recv()
		if err != nil {
			f.fail(err)
			return
		}
		f.deliver(resp)
	}
}

// endLocked frees the feed: it leaves the hub and its upstream stream
// ends, and with it the upstream watch. f.mu is held.
func (f *feed) endLocked() {
	if f.done {
		return
	}
	f.done = true
	if f.shared {
		f.hub.mu.Lock()
		if f.hub.feeds[f.key] == f {
			delete(f.hub.feeds, f.key)
		}
		f.hub.mu.Unlock()
	}
	f.subs = nil
	f.waiters = nil
	f.cancel()
}

// fail ends the feed with the upstream stream's error: each subscriber's
// virtual stream ends with it, as the caller's own stream would have.
func (f *feed) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return // freed by us: the error is our cancellation
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = status.Error(codes.Unavailable, "storegate: the upstream watch stream ended")
	}
	for sub := range f.subs {
		sub.vs.fail(err, false)
	}
	f.endLocked()
}

// leave removes sub; with answer, the caller's cancel is answered. The
// last subscriber leaving frees the feed.
func (f *feed) leave(sub *vsub, answer bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs := sub.vs
	vs.mu.Lock()
	wasLive := sub.live
	vs.dropLocked(sub)
	if answer && wasLive {
		vs.queueLocked(&pb.WatchResponse{Header: copyHeader(f.hdr), WatchId: sub.id, Canceled: true})
	}
	vs.mu.Unlock()
	if f.done {
		return
	}
	delete(f.subs, sub)
	if len(f.subs) == 0 {
		f.endLocked()
	}
}

// answerCreated queues sub's created answer: the feed's last known
// revision, after which every event reaches sub. f.mu is held.
func (f *feed) answerCreated(sub *vsub) {
	vs := sub.vs
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if vs.subs[sub.id] == sub {
		sub.live = true
		hdr := copyHeader(f.hdr)
		hdr.Revision = f.rev
		vs.queueLocked(&pb.WatchResponse{Header: hdr, WatchId: sub.id, Created: true})
	}
	close(sub.answered)
}

// deliver hands one upstream response to the feed's subscribers.
func (f *feed) deliver(resp *pb.WatchResponse) {
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	if resp.Header != nil && !resp.Fragment {
		// A fragmented response's header is taken with its last part: a
		// watch joining in between gets the whole response.
		f.hdr = resp.Header
		if len(resp.Events) == 0 && len(f.frag) == 0 && !resp.Canceled {
			f.rev = max(f.rev, resp.Header.Revision) // created, or progress
		}
	}
	if n := len(resp.Events); n > 0 && !resp.Fragment && resp.Events[n-1].Kv != nil {
		f.rev = max(f.rev, resp.Events[n-1].Kv.ModRevision)
	}
	switch {
	case resp.Created && resp.Canceled:
		// etcd refused the watch: every subscriber's create is answered so.
		for sub := range f.subs {
			vs := sub.vs
			vs.mu.Lock()
			vs.dropLocked(sub)
			vs.queueLocked(copyResponse(resp, clientv3.InvalidWatchID))
			vs.mu.Unlock()
			close(sub.answered)
		}
		f.endLocked()
		f.mu.Unlock()
		return
	case resp.Created:
		f.created = true
		for sub := range f.subs {
			f.answerCreated(sub)
		}
		f.mu.Unlock()
		return
	case resp.WatchId == clientv3.InvalidWatchID && len(resp.Events) == 0:
		// A progress answer: the feed's watch is synced at its revision.
		waiters := f.waiters
		f.waiters = nil
		for vs := range waiters {
			vs.progressAnswer(f, resp)
		}
		f.mu.Unlock()
		return
	}
	if resp.Fragment {
		f.frag = append(f.frag, resp)
		f.mu.Unlock()
		return
	}
	group := append(f.frag, resp)
	f.frag = nil
	end := resp.Canceled
	if f.shared {
		for sub := range f.subs {
			copies := make([]*pb.WatchResponse, len(group))
			for i, r := range group {
				copies[i] = copyResponse(r, sub.id)
			}
			sub.vs.queueShared(sub, copies, end)
		}
		if end {
			f.endLocked()
		}
		f.mu.Unlock()
		return
	}
	// A private feed has one subscriber and waits for it, as the caller's
	// own upstream stream would; never under f.mu, which a cancel needs.
	var sub *vsub
	for s := range f.subs {
		sub = s
	}
	if end {
		f.endLocked()
	}
	f.mu.Unlock()
	if sub == nil {
		return
	}
	for _, r := range group {
		r.WatchId = sub.id
	}
	sub.vs.queueWait(sub, group, end)
}

// askProgress sends a progress request on the feed's stream; vs is
// answered with the next progress answer.
func (f *feed) askProgress(vs *vstream) {
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	if f.waiters == nil {
		f.waiters = map[*vstream]struct{}{}
	}
	f.waiters[vs] = struct{}{}
	f.mu.Unlock()
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	if f.up != nil {
		// An error here is the stream's, which Recv reports.
		_ = f.up.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
	}
}

// vstream is a virtual watch stream: it answers watch.go as one etcd
// watch stream would, its watches served by feeds.
type vstream struct {
	hub       *watchHub
	ctx       context.Context
	stopAfter func() bool

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of q or err
	q       []*pb.WatchResponse
	err     error // set: the stream has ended
	errNow  bool  // err is returned before what is queued
	done    chan struct{}
	ended   bool
	nextID  int64
	subs    map[int64]*vsub
	// round: the feeds a progress request still waits for; roundHdr: the
	// lowest answer so far.
	round    map[*feed]struct{}
	roundHdr *pb.ResponseHeader
}

var _ upWatch = (*vstream)(nil)

func (vs *vstream) signalLocked() {
	close(vs.changed)
	vs.changed = make(chan struct{})
}

// queueLocked queues r whatever the queue's length: answers to the
// caller's own requests, bounded by them. vs.mu is held.
func (vs *vstream) queueLocked(r *pb.WatchResponse) {
	if vs.ended {
		return
	}
	vs.q = append(vs.q, r)
	vs.signalLocked()
}

// queueShared queues a shared feed's response for sub, never waiting: a
// stream whose queue is full ends with errWatchBehind. The feed's mu is
// held.
func (vs *vstream) queueShared(sub *vsub, group []*pb.WatchResponse, end bool) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if !sub.live || vs.ended {
		return
	}
	if len(vs.q) >= int(vs.hub.queueLen.Load()) {
		vs.failLocked(errWatchBehind, true)
		return
	}
	vs.q = append(vs.q, group...)
	if end {
		vs.dropLocked(sub)
	}
	vs.signalLocked()
}

// queueWait queues a private feed's responses for sub, waiting for room.
func (vs *vstream) queueWait(sub *vsub, group []*pb.WatchResponse, end bool) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for len(vs.q) >= int(vs.hub.queueLen.Load()) && !vs.ended {
		ch := vs.changed
		vs.mu.Unlock()
		<-ch
		vs.mu.Lock()
	}
	if !sub.live || vs.ended {
		return
	}
	vs.q = append(vs.q, group...)
	if end {
		vs.dropLocked(sub)
	}
	vs.signalLocked()
}

// dropLocked ends sub for vs: nothing more of it is queued, and a
// progress request no longer waits for its feed. vs.mu is held.
func (vs *vstream) dropLocked(sub *vsub) {
	sub.live = false
	if vs.subs[sub.id] == sub {
		delete(vs.subs, sub.id)
	}
	if _, ok := vs.round[sub.f]; !ok {
		return
	}
	for _, other := range vs.subs {
		if other.live && other.f == sub.f {
			return
		}
	}
	delete(vs.round, sub.f)
	vs.roundDoneLocked()
}

// progressAnswer takes a feed's progress answer for vs's progress
// request. f.mu is held.
func (vs *vstream) progressAnswer(f *feed, resp *pb.WatchResponse) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if _, ok := vs.round[f]; !ok {
		return
	}
	delete(vs.round, f)
	if resp.Header != nil && (vs.roundHdr == nil || resp.Header.Revision < vs.roundHdr.Revision) {
		vs.roundHdr = resp.Header
	}
	vs.roundDoneLocked()
}

// roundDoneLocked answers the progress request once every feed it waits
// for has answered: etcd's one answer for the stream (watch ID -1), at the
// lowest revision the feeds gave, the one revision every watch of the
// stream has been handed all events up to. vs.mu is held.
func (vs *vstream) roundDoneLocked() {
	if vs.round == nil || len(vs.round) > 0 {
		return
	}
	if vs.roundHdr != nil {
		vs.queueLocked(&pb.WatchResponse{Header: copyHeader(vs.roundHdr), WatchId: clientv3.InvalidWatchID})
	}
	vs.round, vs.roundHdr = nil, nil
}

// fail ends the stream with err (nil: its context ended). With now, what
// is queued is dropped: the caller resumes after what it received.
func (vs *vstream) fail(err error, now bool) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vs.failLocked(err, now)
}

func (vs *vstream) failLocked(err error, now bool) {
	if vs.ended {
		return
	}
	vs.ended = true
	vs.err, vs.errNow = err, now
	if now {
		vs.q = nil
	}
	close(vs.done)
	vs.signalLocked()
	// Leaving takes the feeds' locks, which a caller of fail may hold.
	subs := vs.subs
	vs.subs = map[int64]*vsub{}
	for _, sub := range subs {
		sub.live = false
	}
	stop := vs.stopAfter
	go func() {
		stop()
		for _, sub := range subs {
			if sub.f != nil {
				sub.f.leave(sub, false)
			}
		}
	}()
}

// Send handles one request as etcd's watch stream would.
func (vs *vstream) Send(req *pb.WatchRequest) error {
	vs.mu.Lock()
	ended := vs.ended
	vs.mu.Unlock()
	if ended {
		return io.EOF // as a gRPC stream's Send: Recv says why
	}
	switch r := req.RequestUnion.(type) {
	case *pb.WatchRequest_CreateRequest:
		if r.CreateRequest != nil {
			vs.create(r.CreateRequest)
		}
	case *pb.WatchRequest_CancelRequest:
		if r.CancelRequest != nil {
			vs.cancelWatch(r.CancelRequest.WatchId)
		}
	case *pb.WatchRequest_ProgressRequest:
		if r.ProgressRequest != nil {
			vs.progress()
		}
	}
	return nil
}

// create assigns the watch its ID (etcd's rules: the next free one for
// an automatic ID, a refusal for one in use), subscribes it, and returns
// once its created answer is queued, so that creates are answered in the
// order they came.
func (vs *vstream) create(cr *pb.WatchCreateRequest) {
	vs.mu.Lock()
	id := cr.WatchId
	if id == clientv3.AutoWatchID {
		for vs.subs[vs.nextID] != nil {
			vs.nextID++
		}
		id = vs.nextID
		vs.nextID++
	} else if vs.subs[id] != nil {
		vs.queueLocked(&pb.WatchResponse{Header: &pb.ResponseHeader{}, WatchId: clientv3.InvalidWatchID,
			Created: true, Canceled: true, CancelReason: "mvcc: duplicate watch ID provided on the WatchStream"})
		vs.mu.Unlock()
		return
	}
	sub := &vsub{vs: vs, id: id, answered: make(chan struct{})}
	vs.subs[id] = sub
	vs.mu.Unlock()
	vs.hub.subscribe(vs.ctx, sub, cr)
	select {
	case <-sub.answered:
	case <-vs.done:
	}
}

func (vs *vstream) cancelWatch(id int64) {
	vs.mu.Lock()
	sub := vs.subs[id]
	vs.mu.Unlock()
	if sub == nil || sub.f == nil {
		return // etcd answers no cancel of a watch it does not hold
	}
	sub.f.leave(sub, true)
}

// progress asks every feed of the stream's watches for its progress; the
// caller is answered once all have (roundDoneLocked). A request while one
// is under way asks again those that have not answered yet (etcd drops a
// progress request while a watch of the stream is catching up), and is
// answered with it.
func (vs *vstream) progress() {
	vs.mu.Lock()
	if vs.round == nil {
		vs.round = map[*feed]struct{}{}
		for _, sub := range vs.subs {
			if sub.live {
				vs.round[sub.f] = struct{}{}
			}
		}
		if len(vs.round) == 0 {
			vs.round = nil // no watch: etcd answers nothing
		}
	}
	var ask []*feed
	for f := range vs.round {
		ask = append(ask, f)
	}
	vs.mu.Unlock()
	for _, f := range ask {
		f.askProgress(vs)
	}
}

// Recv returns the next queued response, or why the stream ended.
func (vs *vstream) Recv() (*pb.WatchResponse, error) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for {
		if vs.ended && (vs.errNow || len(vs.q) == 0) {
			if vs.err == nil {
				return nil, status.FromContextError(vs.ctx.Err()).Err()
			}
			return nil, vs.err
		}
		if len(vs.q) > 0 {
			r := vs.q[0]
			vs.q[0] = nil
			vs.q = vs.q[1:]
			vs.signalLocked()
			return r, nil
		}
		ch := vs.changed
		vs.mu.Unlock()
		<-ch
		vs.mu.Lock()
	}
}

// CloseSend is a half-close: etcd keeps delivering events until the
// stream's context ends, and so does the virtual stream.
func (vs *vstream) CloseSend() error { return nil }

func copyHeader(h *pb.ResponseHeader) *pb.ResponseHeader {
	if h == nil {
		return &pb.ResponseHeader{}
	}
	return &pb.ResponseHeader{ClusterId: h.ClusterId, MemberId: h.MemberId, Revision: h.Revision, RaftTerm: h.RaftTerm}
}

func copyKV(kv *mvccpb.KeyValue) *mvccpb.KeyValue {
	if kv == nil {
		return nil
	}
	return &mvccpb.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision,
		Version: kv.Version, Value: kv.Value, Lease: kv.Lease}
}

// copyResponse copies r for one subscriber, under watch ID id.
func copyResponse(r *pb.WatchResponse, id int64) *pb.WatchResponse {
	c := &pb.WatchResponse{Header: copyHeader(r.Header), WatchId: id, Created: r.Created, Canceled: r.Canceled,
		CompactRevision: r.CompactRevision, CancelReason: r.CancelReason, Fragment: r.Fragment}
	if len(r.Events) > 0 {
		c.Events = make([]*mvccpb.Event, len(r.Events))
		for i, ev := range r.Events {
			if ev == nil {
				continue
			}
			c.Events[i] = &mvccpb.Event{Type: ev.Type, Kv: copyKV(ev.Kv), PrevKv: copyKV(ev.PrevKv)}
		}
	}
	return c
}
