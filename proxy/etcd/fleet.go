package etcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fleetPrefix holds one record per running gateway replica: fleetPrefix +
// a random instance ID, whose value is the replica's fleetRecord. Each
// record is attached to a lease of the replica's own, kept alive while it
// runs, so a replica that dies drops out when its lease expires and a
// replica that stops cleanly revokes it at once.
const fleetPrefix = ReservedPrefix + "fleet/"

// Bounds on what the registry holds: records beyond maxFleetRecords are
// ignored (and logged), as are records that are too large or malformed.
const (
	maxFleetRecords    = 256
	maxFleetRecordSize = 4 << 10
	maxFleetURLs       = 8
	maxFleetURLLen     = 512
)

// Pacing of the registry's loops: a failed registration or a broken watch
// is retried after fleetRetryMin, doubling to fleetRetryMax; every call
// upstream is bounded by fleetCallTimeout.
const (
	fleetRetryMin    = 100 * time.Millisecond
	fleetRetryMax    = 2 * time.Second
	fleetCallTimeout = 5 * time.Second
	// fleetFirstTimeout bounds the first registration, made before the
	// front serves.
	fleetFirstTimeout = 2 * time.Second
)

// fleetRecord is the value of a replica's record.
type fleetRecord struct {
	// URLs are the replica's advertised client URLs.
	URLs []string `json:"urls"`
}

// fleet is the replica registry: it keeps this replica's record alive
// under fleetPrefix and, from a watch on the prefix, the set of live
// replicas that MemberList answers with.
type fleet struct {
	client *clientv3.Client
	key    string
	value  string
	self   []string
	ttl    int64 // seconds
	log    *slog.Logger

	cancel context.CancelFunc
	done   sync.WaitGroup

	mu      sync.Mutex
	lease   clientv3.LeaseID // the lease the record is on now; 0 when none
	live    map[string][]string
	stopped bool
}

// newFleet starts registering self (this replica's advertised URLs) with a
// lease of ttl, and watching the prefix. It stops when stop is called or
// the client closes.
func newFleet(client *clientv3.Client, self []string, ttl time.Duration, log *slog.Logger) *fleet {
	var id [8]byte
	_, _ = rand.Read(id[:])
	value, _ := json.Marshal(fleetRecord{URLs: self})
	secs := int64((ttl + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	ctx, cancel := context.WithCancel(client.Ctx())
	f := &fleet{client: client, key: fleetPrefix + hex.EncodeToString(id[:]), value: string(value),
		self: slices.Clone(self), ttl: secs, log: log, cancel: cancel, live: map[string][]string{}}
	// A first registration before the front serves, when etcd answers
	// soon: a replica that is ready is listed, and its lease is already
	// there (tests count leases); otherwise the loop keeps trying.
	fctx, fcancel := context.WithTimeout(ctx, fleetFirstTimeout)
	first, err := f.registerOnce(fctx)
	fcancel()
	if err != nil {
		log.Warn("fleet: registering this replica failed; retrying in the background", "err", err)
	}
	f.done.Add(2)
	go func() { defer f.done.Done(); f.register(ctx, first) }()
	go func() { defer f.done.Done(); f.watch(ctx) }()
	return f
}

// retry waits out a backoff that doubles from fleetRetryMin to
// fleetRetryMax, and reports whether ctx is still live.
type retry struct{ d time.Duration }

func (r *retry) wait(ctx context.Context) bool {
	if r.d == 0 {
		r.d = fleetRetryMin
	} else if r.d *= 2; r.d > fleetRetryMax {
		r.d = fleetRetryMax
	}
	t := time.NewTimer(r.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (r *retry) reset() { r.d = 0 }

// register keeps the record alive: grant a lease, put the record on it,
// keep the lease alive until the keep-alive ends (the lease expired or was
// revoked, etcd stopped answering for a TTL, the cluster lost it in a
// restart), then start again with a new lease. lease, when set, is a
// registration already made.
func (f *fleet) register(ctx context.Context, lease clientv3.LeaseID) {
	var r retry
	for ctx.Err() == nil {
		var err error
		if lease == 0 {
			lease, err = f.registerOnce(ctx)
		}
		if err != nil {
			if ctx.Err() == nil {
				f.log.Warn("fleet: registering this replica failed; retrying", "err", err)
			}
			if !r.wait(ctx) {
				return
			}
			continue
		}
		f.log.Info("fleet: replica registered", "key", f.key, "urls", f.self, "lease", int64(lease), "ttl_s", f.ttl)
		held, since := lease, time.Now()
		ka, err := f.client.KeepAlive(ctx, held)
		lease = 0
		if err != nil {
			f.log.Warn("fleet: keeping the registration alive failed; registering again", "err", err)
			if !r.wait(ctx) {
				return
			}
			continue
		}
		for range ka { // the keep-alive answers; it closes when the lease is lost
		}
		if ctx.Err() != nil {
			return
		}
		f.log.Warn("fleet: the registration's lease was lost; registering again", "lease", int64(held))
		// A lease lost soon after it was granted is lost again and again
		// (etcd keeps refusing it): back off rather than spin.
		if time.Since(since) > time.Duration(f.ttl)*time.Second {
			r.reset()
		} else if !r.wait(ctx) {
			return
		}
	}
}

// registerOnce grants a lease and puts the record on it.
func (f *fleet) registerOnce(ctx context.Context) (clientv3.LeaseID, error) {
	cctx, cancel := context.WithTimeout(ctx, fleetCallTimeout)
	defer cancel()
	g, err := f.client.Grant(cctx, f.ttl)
	if err != nil {
		return 0, err
	}
	if _, err := f.client.Put(cctx, f.key, f.value, clientv3.WithLease(g.ID)); err != nil {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), fleetCallTimeout)
		_, _ = f.client.Revoke(rctx, g.ID)
		rcancel()
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		// stop ran between the grant and now: do not leave the record
		// behind for a TTL.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), fleetCallTimeout)
		_, _ = f.client.Revoke(rctx, g.ID)
		rcancel()
		return 0, context.Canceled
	}
	f.lease = g.ID
	return g.ID, nil
}

// watch keeps the live set: list the prefix, then watch it from the
// listed revision; when the watch breaks (compacted past, canceled, the
// member lost its leader) list again.
func (f *fleet) watch(ctx context.Context) {
	var r retry
	for ctx.Err() == nil {
		rev, err := f.list(ctx)
		if err == nil {
			r.reset()
			err = f.follow(ctx, rev)
		}
		if ctx.Err() != nil {
			return
		}
		f.log.Debug("fleet: the replica watch broke; listing again", "err", err)
		if !r.wait(ctx) {
			return
		}
	}
}

// list reads every record and replaces the live set; it returns the
// revision it read at.
func (f *fleet) list(ctx context.Context) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, fleetCallTimeout)
	defer cancel()
	resp, err := f.client.Get(cctx, fleetPrefix, clientv3.WithPrefix(), clientv3.WithLimit(maxFleetRecords+1))
	if err != nil {
		return 0, err
	}
	live := map[string][]string{}
	for _, kv := range resp.Kvs {
		f.put(live, kv)
	}
	f.mu.Lock()
	f.live = live
	f.mu.Unlock()
	return resp.Header.Revision, nil
}

// follow applies the prefix's changes after rev to the live set until the
// watch ends. The watch requires a leader, so that a member cut off from
// the cluster (which would never see a lease expire) ends it.
func (f *fleet) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wc := f.client.Watch(wctx, fleetPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wc {
		if err := resp.Err(); err != nil {
			return err
		}
		if resp.Canceled {
			return errors.New("watch canceled")
		}
		f.mu.Lock()
		for _, ev := range resp.Events {
			switch ev.Type {
			case mvccpb.PUT:
				f.put(f.live, ev.Kv)
			case mvccpb.DELETE:
				delete(f.live, string(ev.Kv.Key))
			}
		}
		f.mu.Unlock()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return rpctypes.ErrGRPCNoLeader
}

// put adds one record to live, if it is well-formed and there is room.
func (f *fleet) put(live map[string][]string, kv *mvccpb.KeyValue) {
	key := string(kv.Key)
	urls, ok := parseFleetRecord(kv.Value)
	if !ok {
		f.log.Warn("fleet: ignoring a malformed replica record", "key", key)
		delete(live, key)
		return
	}
	if _, known := live[key]; !known && len(live) >= maxFleetRecords {
		f.log.Warn("fleet: ignoring a replica record: the registry is full", "key", key, "max", maxFleetRecords)
		return
	}
	live[key] = urls
}

// parseFleetRecord reads a record's value, within the bounds.
func parseFleetRecord(b []byte) ([]string, bool) {
	if len(b) > maxFleetRecordSize {
		return nil, false
	}
	var rec fleetRecord
	if err := json.Unmarshal(b, &rec); err != nil || len(rec.URLs) == 0 || len(rec.URLs) > maxFleetURLs {
		return nil, false
	}
	for _, u := range rec.URLs {
		if len(u) > maxFleetURLLen || !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
			return nil, false
		}
	}
	return rec.URLs, true
}

// replicas is the live set: one entry per distinct set of URLs, sorted,
// this replica's own included (first seen in the registry or not) unless
// it has deregistered.
func (f *fleet) replicas() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[string]bool{}
	var out [][]string
	add := func(urls []string) {
		k := strings.Join(urls, "\x00")
		if !seen[k] {
			seen[k] = true
			out = append(out, urls)
		}
	}
	for key, urls := range f.live {
		if f.stopped && key == f.key {
			continue
		}
		add(urls)
	}
	if !f.stopped || len(out) == 0 {
		add(f.self)
	}
	slices.SortFunc(out, func(a, b []string) int { return slices.Compare(a, b) })
	return out
}

// stop ends both loops and revokes the lease, so the record goes at once.
func (f *fleet) stop(ctx context.Context) error {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		return nil
	}
	f.stopped = true
	lease := f.lease
	f.mu.Unlock()
	f.cancel()
	f.done.Wait()
	if lease == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, fleetCallTimeout)
	defer cancel()
	_, err := f.client.Revoke(ctx, lease)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		err = nil
	}
	return err
}

// Deregister takes this replica out of the fleet, for a clean stop: it
// stops keeping the registration alive and revokes its lease, so the other
// replicas' MemberList drops it at once instead of after the TTL. Call it
// before the upstream closes; later calls do nothing. Without
// Options.FleetTTL it does nothing.
func (s *Server) Deregister(ctx context.Context) error {
	if s.fleet == nil {
		return nil
	}
	return s.fleet.stop(ctx)
}

// replicas is the fleet's live replicas' URLs (see fleet.replicas), or
// this replica's own when there is no registry.
func (s *Server) replicas() [][]string {
	if s.fleet == nil {
		if len(s.opts.AdvertiseURLs) == 0 {
			return nil
		}
		return [][]string{s.opts.AdvertiseURLs}
	}
	return s.fleet.replicas()
}
