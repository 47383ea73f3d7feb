package etcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Watch coalescing. Callers watching the same range share one upstream
// watch, as etcd's own grpc-proxy does: a caller's watch stream (watch.go,
// which judges every event for that caller alone) talks to a virtual
// stream (vstream) that answers like an etcd watch stream, and the virtual
// stream subscribes each of its watches to a feed, one upstream watch:
//   - a shared feed serves the creates with the same key, range end,
//     prev_kv, filters, progress_notify, fragment and require-leader flag
//     whose history it can give: the first starts it (from now, or from
//     its start revision S: a resume by client/v3 after a gateway restart
//     or a drain); a later one from now joins it, as does one from S' while
//     the feed has delivered no event S' asks for (S' at or above the
//     feed's start, and above the last event's revision). Each subscriber
//     is handed only the events at or after its own start (a from-now one:
//     after the revision its created answer gives); a response left empty
//     by that is not sent. The feed ends when its last subscriber leaves;
//   - a private feed serves one create that asks for history the shared
//     feed never had (a start below the feed's), or that etcd would refuse.
//
// When etcd cancels a shared feed as compacted at C, each subscriber that
// started below C is told so, as etcd would have told it; one that
// started at or above C is not: its virtual stream ends with
// errWatchBehind, and client/v3 resumes it.
//
// Feeds travel on lanes, upstream watch streams: the shared feeds on the
// hub's (one per require-leader flag, whose context is the server's
// lifetime, not the first caller's, closed when no feed is left), a
// virtual stream's private feeds on its own (under the caller's context,
// as its upstream stream was before). A progress request is asked of each
// lane the caller's watches are on, and answered with the lowest
// revision, up to which each of them has been handed every event.
//
// Every subscriber gets its own copy of each response (new responses,
// events and key-values; byte slices are shared, nothing mutates them in
// place), since watch.go and plugins rewrite them per caller. A shared
// feed never waits for a subscriber: one whose queue is full has its
// virtual stream ended with errWatchBehind, which client/v3 retries,
// resuming after the last revision it received. Full is 1,024 responses,
// or 8 MiB of their keys, values and previous values: a queue holds
// events every other subscriber has long consumed, so bytes are bounded
// too; an empty queue always takes one response, however large, so that
// one huge event cannot wedge a watch. A private feed waits for room for
// its subscriber, as the caller's own stream did.

// watchQueueLen bounds the responses queued for one virtual stream.
const watchQueueLen = 1024

// watchQueueBytes bounds the bytes of keys and values (current and
// previous) queued for one virtual stream; an empty queue takes one
// response whatever its size.
const watchQueueBytes = 8 << 20

// errWatchBehind ends a virtual stream that fell behind a shared feed.
// codes.Unavailable: client/v3 reopens the stream and resumes every watch
// from the revision after the last one it received.
var errWatchBehind = status.Error(codes.Unavailable, "storegate: watch fell behind; resume from the last revision received")

// watchHub holds the shared feeds.
type watchHub struct {
	up         func(ctx context.Context) (upWatch, error)
	ctx        context.Context // the shared feeds' lifetime
	queueLen   atomic.Int64
	queueBytes atomic.Int64

	// mu is taken after a feed's and a lane's, never before.
	mu    sync.Mutex
	feeds map[feedKey]*feed
	lanes map[bool]*lane // the shared feeds' streams, by require-leader
}

// newWatchHub returns a hub opening upstream streams with up. Shared
// feeds live under ctx (the server's lifetime); each also ends with its
// last subscriber.
func newWatchHub(ctx context.Context, up func(ctx context.Context) (upWatch, error)) *watchHub {
	h := &watchHub{up: up, ctx: ctx, feeds: map[feedKey]*feed{}, lanes: map[bool]*lane{}}
	h.queueLen.Store(watchQueueLen)
	h.queueBytes.Store(watchQueueBytes)
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

// shared reports the shared feeds and lanes in use (for tests).
func (h *watchHub) shared() (feeds, lanes int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.feeds), len(h.lanes)
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
	lane   atomic.Pointer[lane] // set with its create, under mu

	// mu is taken before its lane's, hub.mu and any vstream's mu.
	mu      sync.Mutex
	done    bool
	created bool
	hdr     *pb.ResponseHeader // the last header seen
	// rev: every event of the watch up to it has been delivered (the
	// created answer's revision, a progress answer's, the last event's).
	// An events response's header does not say as much: etcd sends a
	// watch catching up its events in batches, each under the store's
	// current revision.
	rev  int64
	subs map[*vsub]struct{}
	frag []*pb.WatchResponse // parts of a fragmented response so far
	// from: the first revision the feed delivers events of (its start, or
	// its created answer's revision + 1 for one from now; 0 until known).
	// createdRev: its created answer's revision. lastEv: the revision of
	// the last event it delivered; a joiner from S' > lastEv has missed
	// nothing it asks for.
	from, createdRev, lastEv int64

	// Guarded by lane.mu: the upstream watch's ID once created; counted
	// off the lane's feeds: refused by etcd, or freed before its created
	// answer came (the watch is canceled once it does).
	upID       int64
	upCreated  bool
	countedOff bool
}

// lane is one upstream watch stream carrying feeds: one per
// require-leader flag for the shared feeds (the hub's lifetime, closed
// when no feed is left), one per virtual stream for its private ones
// (the caller's context, as its own upstream stream was before). etcd
// answers creates on a stream in order, and a progress request with the
// revision every watch of the stream is synced at.
type lane struct {
	hub    *watchHub
	shared bool
	leader bool // shared: its key in hub.lanes
	ctx    context.Context
	cancel context.CancelFunc

	sendMu sync.Mutex // serializes up.Send and the order of pending
	up     upWatch    // opened with the first create

	mu      sync.Mutex
	closed  bool
	pending []*feed         // creates sent and not answered, in order
	byID    map[int64]*feed // by upstream watch ID
	feeds   int             // feeds using the lane, pending or created
	waiters map[*vstream]struct{}
	// reasking: a timer asks again while waiters wait (askProgress).
	reasking bool
}

// progressRetry is how often a lane asks again for progress while a
// request waits: etcd drops a progress request when any watch of the
// stream is catching up, and a shared lane's watches are many callers'.
const progressRetry = 100 * time.Millisecond

func (h *watchHub) newLane(ctx context.Context, shared, leader bool) *lane {
	ctx, cancel := context.WithCancel(ctx)
	return &lane{hub: h, shared: shared, leader: leader, ctx: ctx, cancel: cancel, byID: map[int64]*feed{}}
}

// sharedLane returns the shared lane for the require-leader flag.
func (h *watchHub) sharedLane(leader bool) *lane {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lanes[leader]
	if l == nil {
		ctx := metadata.NewOutgoingContext(h.ctx, nil)
		if leader {
			ctx = metadata.NewOutgoingContext(h.ctx, metadata.Pairs(rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader))
		}
		l = h.newLane(ctx, true, leader)
		h.lanes[leader] = l
	}
	return l
}

// open opens the lane's stream unless it is open. It reports false when
// the lane was closed meanwhile (take another). No feed's mu is held: a
// stream may take a while to open while the connection is down.
func (l *lane) open() (bool, error) {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return false, nil
	}
	if l.up != nil {
		return true, nil
	}
	up, err := l.hub.up(l.ctx)
	if err != nil {
		return false, err
	}
	l.up = up
	go l.run(up)
	return true, nil
}

// create sends f's create on the lane, open. It reports false when the
// lane was closed meanwhile (take another). f.mu is held.
func (l *lane) create(f *feed, cr *pb.WatchCreateRequest) bool {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.feeds++
	l.pending = append(l.pending, f)
	l.mu.Unlock()
	f.lane.Store(l)
	// An error here is the stream's, which Recv reports.
	_ = l.up.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}})
	return true
}

func (l *lane) run(up upWatch) {
	for {
		resp, err := up.Recv()
		if err != nil {
			l.fail(err)
			return
		}
		l.deliver(resp)
	}
}

// deliver hands a response to the feed it concerns.
func (l *lane) deliver(resp *pb.WatchResponse) {
	l.mu.Lock()
	var f *feed
	switch {
	case resp.Created:
		// etcd answers creates in order: this answers the first pending.
		if len(l.pending) == 0 {
			l.mu.Unlock()
			return
		}
		f = l.pending[0]
		l.pending[0] = nil
		l.pending = l.pending[1:]
		if resp.Canceled {
			if !f.countedOff {
				f.countedOff = true
				l.dropLocked()
			}
			break
		}
		f.upID, f.upCreated = resp.WatchId, true
		if f.countedOff {
			l.mu.Unlock()
			l.cancelUp(resp.WatchId)
			return
		}
		l.byID[resp.WatchId] = f
	case resp.WatchId == clientv3.InvalidWatchID && len(resp.Events) == 0:
		// A progress answer: every watch of the stream is synced at its
		// revision, and every event up to it has been delivered.
		waiters := l.waiters
		l.waiters = nil
		var feeds []*feed
		for _, f := range l.byID {
			feeds = append(feeds, f)
		}
		for vs := range waiters {
			vs.progressAnswer(l, resp)
		}
		l.mu.Unlock()
		if resp.Header != nil {
			for _, f := range feeds {
				f.synced(resp.Header.Revision)
			}
		}
		return
	default:
		f = l.byID[resp.WatchId]
	}
	l.mu.Unlock()
	if f != nil {
		f.deliver(resp)
	}
}

// dropLocked counts one feed less; a shared lane left without any
// closes (its stream, and so nothing, is left upstream). l.mu is held.
func (l *lane) dropLocked() {
	l.feeds--
	if l.feeds > 0 || !l.shared || l.closed {
		return
	}
	l.closed = true
	l.cancel()
	l.hub.mu.Lock()
	if l.hub.lanes[l.leader] == l {
		delete(l.hub.lanes, l.leader)
	}
	l.hub.mu.Unlock()
}

// release takes f off the lane, canceling its upstream watch.
func (l *lane) release(f *feed) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	if f.countedOff {
		l.mu.Unlock()
		return
	}
	if !f.upCreated {
		// Canceled once etcd answers its create (or with the stream).
		f.countedOff = true
		l.dropLocked()
		l.mu.Unlock()
		return
	}
	if l.byID[f.upID] != f {
		l.mu.Unlock()
		return
	}
	delete(l.byID, f.upID)
	l.dropLocked()
	closed := l.closed
	l.mu.Unlock()
	if !closed {
		l.cancelUp(f.upID)
	}
}

func (l *lane) cancelUp(id int64) {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	if l.up != nil {
		// An error here is the stream's, which Recv reports.
		_ = l.up.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{
			CancelRequest: &pb.WatchCancelRequest{WatchId: id}}})
	}
}

// fail ends the lane with its stream's error: each of its feeds fails
// with it, as the callers' own streams would have.
func (l *lane) fail(err error) {
	l.mu.Lock()
	wasClosed := l.closed
	l.closed = true
	var feeds []*feed
	for _, f := range l.pending {
		feeds = append(feeds, f)
	}
	for _, f := range l.byID {
		feeds = append(feeds, f)
	}
	l.pending, l.byID, l.waiters = nil, map[int64]*feed{}, nil
	l.mu.Unlock()
	l.cancel()
	if l.shared {
		l.hub.mu.Lock()
		if l.hub.lanes[l.leader] == l {
			delete(l.hub.lanes, l.leader)
		}
		l.hub.mu.Unlock()
	}
	if wasClosed && len(feeds) == 0 {
		return // closed by us: the error is our cancellation
	}
	for _, f := range feeds {
		f.fail(err)
	}
}

// askProgress sends a progress request on the lane; vs is answered with
// the next progress answer.
func (l *lane) askProgress(vs *vstream) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	if l.waiters == nil {
		l.waiters = map[*vstream]struct{}{}
	}
	l.waiters[vs] = struct{}{}
	if !l.reasking {
		l.reasking = true
		time.AfterFunc(progressRetry, l.reask)
	}
	l.mu.Unlock()
	l.sendProgress()
}

// reask asks for progress again while some request waits for it.
func (l *lane) reask() {
	l.mu.Lock()
	if l.closed || len(l.waiters) == 0 {
		l.reasking = false
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.sendProgress()
	time.AfterFunc(progressRetry, l.reask)
}

func (l *lane) sendProgress() {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	if l.up != nil {
		// An error here is the stream's, which Recv reports.
		_ = l.up.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
	}
}

// vsub is one watch of a virtual stream, subscribed to a feed.
type vsub struct {
	vs       *vstream
	id       int64         // the watch ID the caller knows
	f        *feed         // set once (attach), under vs.mu
	answered chan struct{} // closed once its created answer is queued
	// min (guarded by its feed's mu): events below it are not the
	// watch's (its start revision; for one from now, set with its created
	// answer). A shared feed may deliver older ones, for other watches.
	min int64
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
			break // h.mu still held
		}
		h.mu.Unlock()
		f.mu.Lock()
		if f.done {
			// Freed meanwhile (it has left the map): look again.
			f.mu.Unlock()
			continue
		}
		if !f.joinable(cr.StartRevision) {
			// History the feed never had, or has passed: a watch of its
			// own.
			f.mu.Unlock()
			h.private(ctx, sub, fwd)
			return
		}
		if !sub.attach(f) {
			f.mu.Unlock()
			return
		}
		sub.min = cr.StartRevision
		f.subs[sub] = struct{}{}
		if f.created {
			f.answerCreated(sub)
		}
		f.mu.Unlock()
		return
	}
	f := &feed{hub: h, key: key, shared: true, from: cr.StartRevision, subs: map[*vsub]struct{}{sub: {}}}
	if !sub.attach(f) {
		h.mu.Unlock()
		return
	}
	sub.min = cr.StartRevision
	h.feeds[key] = f
	h.mu.Unlock()
	f.start(fwd, nil)
}

// joinable reports whether a create from start (0: from now) may join
// the feed: one from now always may (it is handed what comes after its
// created answer); one from a revision may while the feed has delivered
// no event it asks for and will deliver every one (start at or above the
// feed's own). f.mu is held.
func (f *feed) joinable(start int64) bool {
	if start == 0 {
		return true
	}
	return f.from != 0 && start >= f.from && start > f.lastEv
}

// private starts a feed of sub's own on its stream's private lane.
func (h *watchHub) private(ctx context.Context, sub *vsub, cr *pb.WatchCreateRequest) {
	f := &feed{hub: h, subs: map[*vsub]struct{}{sub: {}}}
	if !sub.attach(f) {
		return
	}
	f.start(cr, sub.vs)
}

// start sends the feed's create on its lane: the shared one, or vs's
// private one. A stream that cannot be opened fails the feed.
func (f *feed) start(cr *pb.WatchCreateRequest, vs *vstream) {
	var stale *lane
	for {
		var l *lane
		if f.shared {
			l = f.hub.sharedLane(f.key.requireLeader)
		} else if l = vs.privateLane(stale); l == nil {
			return // the stream has ended
		}
		ok, err := l.open()
		if err != nil {
			f.fail(err)
			return
		}
		if ok {
			// Under f.mu, so that the feed cannot end (and leave its lane)
			// halfway.
			f.mu.Lock()
			if f.done {
				f.mu.Unlock()
				return
			}
			ok = l.create(f, cr)
			f.mu.Unlock()
			if ok {
				return
			}
		}
		stale = l // closed meanwhile (its stream failed): take a new one
	}
}

// synced records a progress answer of the feed's lane.
func (f *feed) synced(rev int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev = max(f.rev, rev)
}

// endLocked frees the feed: it leaves the hub and its lane, which cancels
// its upstream watch. f.mu is held.
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
	if l := f.lane.Load(); l != nil {
		l.release(f)
	}
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

// answerCreated queues sub's created answer, with a revision up to which
// sub has been handed every event it asks for: the feed's synced
// revision; for a watch from now, the feed's created revision if that is
// higher (a feed from a start revision catching up), and sub is handed
// only the events after it. f.mu is held.
func (f *feed) answerCreated(sub *vsub) {
	rev := f.rev
	if sub.min == 0 {
		rev = max(f.rev, f.createdRev)
		sub.min = rev + 1
	}
	vs := sub.vs
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if vs.subs[sub.id] == sub {
		sub.live = true
		hdr := copyHeader(f.hdr)
		hdr.Revision = rev
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
		switch {
		case len(resp.Events) > 0 || len(f.frag) > 0 || resp.Canceled:
		case resp.Created:
			// A watch from S is created at the store's revision with its
			// events from S still to come: synced only up to S-1.
			f.createdRev = resp.Header.Revision
			if f.from == 0 {
				f.from = f.createdRev + 1
			}
			f.rev = max(f.rev, min(f.from-1, f.createdRev))
		default:
			f.rev = max(f.rev, resp.Header.Revision) // progress
		}
	}
	if n := len(resp.Events); n > 0 && !resp.Fragment && resp.Events[n-1].Kv != nil {
		f.rev = max(f.rev, resp.Events[n-1].Kv.ModRevision)
		f.lastEv = max(f.lastEv, resp.Events[n-1].Kv.ModRevision)
	}
	switch {
	case resp.Created && resp.Canceled:
		// etcd refused the watch: every subscriber's create is answered so.
		for sub := range f.subs {
			vs := sub.vs
			vs.mu.Lock()
			vs.dropLocked(sub)
			vs.queueLocked(copyResponse(resp, clientv3.InvalidWatchID, 0))
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
		compact := resp.CompactRevision
		for sub := range f.subs {
			if end && compact != 0 && sub.min >= compact {
				// Compacted below what this one asks for: etcd would not
				// have told it so. It resumes on a stream of its own.
				sub.vs.fail(errWatchBehind, true)
				continue
			}
			if copies := copyGroup(group, sub.id, sub.min); len(copies) > 0 {
				sub.vs.queueShared(sub, copies, end)
			}
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

// vstream is a virtual watch stream: it answers watch.go as one etcd
// watch stream would, its watches served by feeds.
type vstream struct {
	hub       *watchHub
	ctx       context.Context
	stopAfter func() bool

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of q or err
	q       []*pb.WatchResponse
	qBytes  int   // respBytes of q
	err     error // set: the stream has ended
	errNow  bool  // err is returned before what is queued
	done    chan struct{}
	ended   bool
	nextID  int64
	subs    map[int64]*vsub
	// round: the lanes a progress request still waits for; roundHdr: the
	// lowest answer so far.
	round    map[*lane]struct{}
	roundHdr *pb.ResponseHeader
	priv     *lane // its private feeds' stream, opened with the first
}

// privateLane returns the stream's private lane, a new one if it is
// stale (closed), nil once the stream has ended.
func (vs *vstream) privateLane(stale *lane) *lane {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if vs.ended {
		return nil
	}
	if vs.priv == nil || vs.priv == stale {
		vs.priv = vs.hub.newLane(vs.ctx, false, false)
	}
	return vs.priv
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
	vs.qBytes += respBytes(r)
	vs.signalLocked()
}

// roomLocked reports whether responses holding bytes fit in the queue:
// an empty one takes them whatever their size. vs.mu is held.
func (vs *vstream) roomLocked(bytes int) bool {
	return len(vs.q) == 0 ||
		len(vs.q) < int(vs.hub.queueLen.Load()) && int64(vs.qBytes+bytes) <= vs.hub.queueBytes.Load()
}

func (vs *vstream) appendLocked(group []*pb.WatchResponse, bytes int) {
	vs.q = append(vs.q, group...)
	vs.qBytes += bytes
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
	n := groupBytes(group)
	if !vs.roomLocked(n) {
		vs.failLocked(errWatchBehind, true)
		return
	}
	vs.appendLocked(group, n)
	if end {
		vs.dropLocked(sub)
	}
	vs.signalLocked()
}

// queueWait queues a private feed's responses for sub, waiting for room.
func (vs *vstream) queueWait(sub *vsub, group []*pb.WatchResponse, end bool) {
	n := groupBytes(group)
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for !vs.roomLocked(n) && !vs.ended {
		ch := vs.changed
		vs.mu.Unlock()
		<-ch
		vs.mu.Lock()
	}
	if !sub.live || vs.ended {
		return
	}
	vs.appendLocked(group, n)
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
	l := sub.f.lane.Load()
	if _, ok := vs.round[l]; !ok || l == nil {
		return
	}
	for _, other := range vs.subs {
		if other.live && other.f.lane.Load() == l {
			return
		}
	}
	delete(vs.round, l)
	vs.roundDoneLocked()
}

// progressAnswer takes a lane's progress answer for vs's progress
// request. l.mu is held.
func (vs *vstream) progressAnswer(l *lane, resp *pb.WatchResponse) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if _, ok := vs.round[l]; !ok {
		return
	}
	delete(vs.round, l)
	if resp.Header != nil && (vs.roundHdr == nil || resp.Header.Revision < vs.roundHdr.Revision) {
		vs.roundHdr = resp.Header
	}
	vs.roundDoneLocked()
}

// roundDoneLocked answers the progress request once every lane it waits
// for has answered: etcd's one answer for the stream (watch ID -1), at the
// lowest revision the lanes gave, the one revision every watch of the
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
		vs.q, vs.qBytes = nil, 0
	}
	close(vs.done)
	vs.signalLocked()
	// Leaving takes the feeds' locks, which a caller of fail may hold.
	subs := vs.subs
	vs.subs = map[int64]*vsub{}
	for _, sub := range subs {
		sub.live = false
	}
	stop, priv := vs.stopAfter, vs.priv
	go func() {
		stop()
		if priv != nil {
			priv.cancel()
		}
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

// progress asks every lane of the stream's watches (the shared one, its
// private one) for its progress; the caller is answered once all have
// (roundDoneLocked). A request while one is under way asks again those
// that have not answered yet (etcd drops a progress request while a watch
// of the stream is catching up), and is answered with it.
func (vs *vstream) progress() {
	vs.mu.Lock()
	if vs.round == nil {
		vs.round = map[*lane]struct{}{}
		for _, sub := range vs.subs {
			if sub.live {
				vs.round[sub.f.lane.Load()] = struct{}{}
			}
		}
		if len(vs.round) == 0 {
			vs.round = nil // no watch: etcd answers nothing
		}
	}
	var ask []*lane
	for l := range vs.round {
		ask = append(ask, l)
	}
	vs.mu.Unlock()
	for _, l := range ask {
		l.askProgress(vs)
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
			vs.qBytes -= respBytes(r)
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

// copyResponse copies r for one subscriber, under watch ID id, without
// the events below revision first.
func copyResponse(r *pb.WatchResponse, id, first int64) *pb.WatchResponse {
	c := &pb.WatchResponse{Header: copyHeader(r.Header), WatchId: id, Created: r.Created, Canceled: r.Canceled,
		CompactRevision: r.CompactRevision, CancelReason: r.CancelReason, Fragment: r.Fragment}
	if len(r.Events) > 0 {
		c.Events = make([]*mvccpb.Event, 0, len(r.Events))
		for _, ev := range r.Events {
			if ev == nil {
				c.Events = append(c.Events, nil)
				continue
			}
			if ev.Kv != nil && ev.Kv.ModRevision < first {
				continue
			}
			c.Events = append(c.Events, &mvccpb.Event{Type: ev.Type, Kv: copyKV(ev.Kv), PrevKv: copyKV(ev.PrevKv)})
		}
	}
	return c
}

// copyGroup copies a response (its fragments, in group) for one
// subscriber, under watch ID id, without the events below revision first.
// A part left without events is left out, as etcd would not have sent it,
// unless it cancels; the last part kept ends the response.
func copyGroup(group []*pb.WatchResponse, id, first int64) []*pb.WatchResponse {
	out := make([]*pb.WatchResponse, 0, len(group))
	for _, r := range group {
		c := copyResponse(r, id, first)
		if len(c.Events) == 0 && len(r.Events) > 0 && !c.Canceled && c.CompactRevision == 0 {
			continue
		}
		out = append(out, c)
	}
	if n := len(out); n > 0 {
		out[n-1].Fragment = false
	}
	return out
}

// respBytes is what a queued response holds on to: its keys and values,
// current and previous.
func respBytes(r *pb.WatchResponse) int {
	n := 0
	for _, ev := range r.Events {
		if ev == nil {
			continue
		}
		for _, kv := range []*mvccpb.KeyValue{ev.Kv, ev.PrevKv} {
			if kv != nil {
				n += len(kv.Key) + len(kv.Value)
			}
		}
	}
	return n
}

func groupBytes(group []*pb.WatchResponse) int {
	n := 0
	for _, r := range group {
		n += respBytes(r)
	}
	return n
}
