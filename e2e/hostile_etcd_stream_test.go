package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// heWithout drops the named intentions from an intentions file.
func heWithout(t *testing.T, intentions string, names ...string) string {
	t.Helper()
	blocks := strings.Split(intentions, "\n  - name: ")
	out := []string{blocks[0]}
	dropped := 0
	for _, b := range blocks[1:] {
		name, _, _ := strings.Cut(b, "\n")
		drop := false
		for _, n := range names {
			if strings.TrimSpace(name) == n {
				drop = true
			}
		}
		if drop {
			dropped++
			continue
		}
		out = append(out, b)
	}
	if dropped != len(names) {
		t.Fatalf("dropped %d of the intentions %q", dropped, names)
	}
	return strings.Join(out, "\n  - name: ")
}

// heLoad puts to hidden and readable keys directly until stop is closed.
func heLoad(t *testing.T, e *heEnv, stop <-chan struct{}, keys ...string) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := keys[i%len(keys)]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _ = e.direct.Put(ctx, fmt.Sprintf("%s%d", k, i%7), fmt.Sprintf("v%d", i))
			cancel()
		}
	}()
	return &wg
}

// TestHostileEtcdStreamState: class 5. Watch IDs are the caller's: reused
// after a cancel on another range, they never deliver what the caller may
// not read, and every create is answered once, in order. A policy change
// reaches streams already open: watches are canceled with etcd's reason,
// Observe ends with PermissionDenied, keep-alives get TTL 0.
func TestHostileEtcdStreamState(t *testing.T) {
	e := newHeEnv(t, heShipped(t)+heOpsIntention)
	for k, v := range heSeed {
		e.put(t, k, v)
	}

	t.Run("watch ID reused on another range", func(t *testing.T) {
		stop := make(chan struct{})
		load := heLoad(t, e, stop, "/app/secret/s", "/app/pub/p", "/app/o/o", "/app/secret/t")
		load2 := heLoad(t, e, stop, "/app/pub/q", "/app/secret/u", "/app/secret/v")
		defer func() { close(stop); load.Wait(); load2.Wait() }()
		w := heOpenWatch(t, e.web)
		filtered := &pb.WatchCreateRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), WatchId: 7, PrevKv: true}
		pub := &pb.WatchCreateRequest{Key: []byte("/app/pub/"), RangeEnd: []byte("/app/pub0"), WatchId: 7, PrevKv: true}
		deadline := time.Now().Add(6 * time.Second)
		events, cycles := 0, 0
		for cycle := 0; cycle < 30 && time.Now().Before(deadline); cycle++ {
			first, second := filtered, pub
			if cycle%2 == 1 {
				first, second = pub, filtered
			}
			w.create(t, first)
			w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Created && r.WatchId == 7 })
			time.Sleep(15 * time.Millisecond) // let etcd buffer events for it
			w.cancel(t, 7)
			w.create(t, second)
			// Until the second watch is created, events may be the first's;
			// after, they must lie in the second's range. Never a secret.
			createdSecond := false
			check := func(r *pb.WatchResponse) {
				for _, ev := range r.Events {
					events++
					k := string(ev.Kv.Key)
					if !webReadable(k) {
						t.Errorf("cycle %d: event on %q (%q) delivered under watch %d", cycle, k, ev.Kv.Value, r.WatchId)
					}
					if createdSecond && r.WatchId == 7 && !inRange(ev.Kv.Key, second.Key, second.RangeEnd) {
						t.Errorf("cycle %d: event on %q delivered under re-created watch 7 [%q,%q)", cycle, k, second.Key, second.RangeEnd)
					}
				}
			}
			for _, r := range w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Created && r.WatchId == 7 }) {
				check(r)
			}
			createdSecond = true
			time.Sleep(10 * time.Millisecond)
			w.cancel(t, 7)
			for _, r := range w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Canceled && r.WatchId == 7 }) {
				check(r)
			}
			cycles++
		}
		t.Logf("%d cycles, %d events judged", cycles, events)

		// A create reusing an ID still in use, and odd IDs.
		w2 := heOpenWatch(t, e.web)
		w2.create(t, &pb.WatchCreateRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), WatchId: 9})
		w2.create(t, &pb.WatchCreateRequest{Key: []byte("/app/pub/"), RangeEnd: []byte("/app/pub0"), WatchId: 9})
		w2.create(t, &pb.WatchCreateRequest{Key: []byte("/app/secret/"), RangeEnd: []byte("/app/secret0"), WatchId: 9})
		w2.create(t, &pb.WatchCreateRequest{Key: []byte("/app/"), RangeEnd: []byte("\x00"), WatchId: -5})
		w2.create(t, &pb.WatchCreateRequest{Key: []byte("/app/"), RangeEnd: []byte("\x00"), WatchId: 1 << 62})
		for _, r := range w2.drain(500 * time.Millisecond) {
			for _, ev := range r.Events {
				if !webReadable(string(ev.Kv.Key)) {
					t.Errorf("duplicate IDs: event on %q (%q) under watch %d", ev.Kv.Key, ev.Kv.Value, r.WatchId)
				}
			}
		}
	})

	t.Run("every create answered once, in order", func(t *testing.T) {
		type c struct {
			key, end string
			id       int64
			allowed  bool
		}
		burst := []c{
			{"/app/pub/", "/app/pub0", 21, true},
			{"/other/", "/other0", 22, false},
			{"/app/secret/", "/app/secret0", 23, false},
			{"/app/a", "", 24, true},
			{"/appz", "/app{", 25, false},
			{"/app/", "/app0", 26, true},
			{"\x00", "\x00", 27, true}, // filtered to what web may read
			{"/app/secret/token", "", 28, false},
		}
		var streams []*heWatch
		for range 8 {
			w := heOpenWatch(t, e.web)
			for _, b := range burst {
				w.create(t, &pb.WatchCreateRequest{Key: []byte(b.key), RangeEnd: []byte(b.end), WatchId: b.id})
			}
			streams = append(streams, w)
		}
		for i, w := range streams {
			var answers []*pb.WatchResponse
			rs := w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool {
				if r.Created {
					answers = append(answers, r)
				}
				return len(answers) == len(burst)
			})
			_ = rs
			for j, b := range burst {
				a := answers[j]
				switch {
				case b.allowed && (a.Canceled || a.WatchId != b.id):
					t.Errorf("stream %d, create %d [%q,%q): answered id %d canceled=%v %q, want created %d", i, j, b.key, b.end, a.WatchId, a.Canceled, a.CancelReason, b.id)
				case !b.allowed && (!a.Canceled || a.WatchId != -1 || a.CancelReason != "etcdserver: permission denied"):
					t.Errorf("stream %d, create %d [%q,%q): answered id %d canceled=%v %q, want -1 permission denied", i, j, b.key, b.end, a.WatchId, a.Canceled, a.CancelReason)
				}
			}
		}
		for _, k := range []string{"/other/x", "/app/secret/token", "/appz/x", "/app/pub/x"} {
			e.put(t, k, "after-"+k)
		}
		for i, w := range streams {
			for _, r := range w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool {
				for _, ev := range r.Events {
					if string(ev.Kv.Key) == "/app/pub/x" && r.WatchId == 21 {
						return true
					}
				}
				return false
			}) {
				for _, ev := range r.Events {
					if !webReadable(string(ev.Kv.Key)) {
						t.Errorf("stream %d: event on %q under watch %d", i, ev.Kv.Key, r.WatchId)
					}
				}
			}
			w.stop()
		}
	})

	t.Run("policy change reaches open streams", func(t *testing.T) {
		webLease := heGrant(t, e.web, 60)
		el := v3electionpb.NewElectionClient(e.web)
		if _, err := el.Campaign(heCtx(t), &v3electionpb.CampaignRequest{Name: []byte("/app/election/obs"), Lease: webLease, Value: []byte("v1")}); err != nil {
			t.Fatalf("campaign: %v", err)
		}
		octx, ocancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ocancel()
		obs, err := el.Observe(octx, &v3electionpb.LeaderRequest{Name: []byte("/app/election/obs")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := obs.Recv(); err != nil {
			t.Fatalf("observe: %v", err)
		}
		obsErr := make(chan error, 1)
		go func() {
			for {
				if _, err := obs.Recv(); err != nil {
					obsErr <- err
					return
				}
			}
		}()
		kctx, kcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer kcancel()
		ka, err := pb.NewLeaseClient(e.web).LeaseKeepAlive(kctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: webLease}); err != nil {
			t.Fatal(err)
		}
		if r, err := ka.Recv(); err != nil || r.TTL <= 0 {
			t.Fatalf("keep-alive before the change: %v %v", r, err)
		}

		w := heOpenWatch(t, e.web)
		w.create(t, &pb.WatchCreateRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), WatchId: 1})
		w.create(t, &pb.WatchCreateRequest{Key: []byte("/app/pub/"), RangeEnd: []byte("/app/pub0"), WatchId: 2})
		w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Created && r.WatchId == 2 })
		e.put(t, "/app/pub/before", "b")
		w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return len(r.Events) > 0 && r.WatchId == 2 })

		// Creates keep coming on another stream while the policy changes.
		racer := heOpenWatch(t, e.web)
		var sent atomic.Int64
		stopRacer := make(chan struct{})
		racerDone := make(chan struct{})
		go func() {
			defer close(racerDone)
			for i := int64(100); i < 400; i++ {
				select {
				case <-stopRacer:
					return
				default:
				}
				if racer.s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
					Key: []byte("/app/pub/"), RangeEnd: []byte("/app/pub0"), WatchId: i}}}) != nil {
					return
				}
				sent.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
		}()
		time.Sleep(50 * time.Millisecond)

		heWriteIntentions(t, e.gw.policyDir, heWithout(t, heShipped(t)+heOpsIntention, "web-app-kv", "web-leases", "web-elections"))
		kv := pb.NewKVClient(e.web)
		heEventually(t, 30*time.Second, "the gateway reloads the policy (web's read of /app/pub/x denied)", func() bool {
			_, err := kv.Range(heCtx(t), &pb.RangeRequest{Key: []byte("/app/pub/x")})
			return heIsDenied(err)
		})
		close(stopRacer)
		<-racerDone
		n := sent.Load()

		// The open watches are canceled with etcd's reason.
		canceled := map[int64]string{}
		w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool {
			if r.Canceled {
				canceled[r.WatchId] = r.CancelReason
			}
			return len(canceled) == 2
		})
		for id, reason := range canceled {
			if (id != 1 && id != 2) || reason != "etcdserver: permission denied" {
				t.Errorf("watch %d canceled with %q, want etcdserver: permission denied", id, reason)
			}
		}
		// Every racing create is answered once; those created are canceled.
		answers := int64(0)
		open := map[int64]bool{}
		racer.until(t, 15*time.Second, func(r *pb.WatchResponse) bool {
			if r.Created {
				answers++
				if !r.Canceled {
					open[r.WatchId] = true
				}
			} else if r.Canceled {
				if r.CancelReason != "etcdserver: permission denied" {
					t.Errorf("racing watch %d canceled with %q", r.WatchId, r.CancelReason)
				}
				delete(open, r.WatchId)
			}
			return answers == n && len(open) == 0
		})
		if answers != n {
			t.Errorf("%d racing creates, %d answers", n, answers)
		}
		// Nothing more arrives for anyone.
		e.put(t, "/app/pub/after", "a")
		e.put(t, "/app/a", "after")
		for _, s := range []*heWatch{w, racer} {
			for _, r := range s.drain(700 * time.Millisecond) {
				if len(r.Events) > 0 {
					t.Errorf("event on %q under watch %d after the policy change", r.Events[0].Kv.Key, r.WatchId)
				}
			}
		}
		// A new create is denied.
		w.create(t, &pb.WatchCreateRequest{Key: []byte("/app/pub/"), RangeEnd: []byte("/app/pub0"), WatchId: 3})
		if r := w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Created }); !r[len(r)-1].Canceled {
			t.Errorf("a create after the change: %v", r[len(r)-1])
		}

		// Observe ends with PermissionDenied.
		e.put(t, "/app/election/obs/nudge", "n")
		select {
		case err := <-obsErr:
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("observe ended with %v, want PermissionDenied", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("observe still open 10s after the policy change")
		}
		// Keep-alives get TTL 0.
		_, _, _ = e.ttl(t, webLease)
		if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: webLease}); err != nil {
			t.Fatalf("keep-alive after the change: %v", err)
		}
		if r, err := ka.Recv(); err != nil || r.TTL != 0 {
			t.Errorf("keep-alive after the change: %v %v, want TTL 0", r, err)
		}
	})
}
