package e2e

// TestExhaust is THREATS.md class 9, "cost before decision", against the
// real gateway binary and a real (embedded) etcd running the shipped
// intentions: a caller with no rights (spiffe://example.org/nobody: status
// read and a read of the top level of /shared/, no watch and no write
// anywhere) must not make the gateway or etcd spend memory, goroutines,
// streams or upstream calls beyond small bounds, and the limits on streams
// and watches per caller must refuse what is beyond them and give slots back.
//
// Callers speak raw gRPC with SVIDs from the harness's dev CA; outcomes are
// checked in etcd (its revision, its keys, its own /metrics) and in the
// gateway's admin /metrics (Go runtime gauges).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/config"
)

const (
	exhStreams    = 20000     // watch streams the no-rights caller holds
	exhConns      = 20        // gRPC connections they are spread over
	exhOpeners    = 64        // streams being opened at once
	exhBigPuts    = 400       // denied Puts with huge keys, at least
	exhBigKey     = 1_500_000 // bytes: under the gateway's 2 MiB request bound and etcd's 1.5 MiB
	exhBigConc    = 8         // huge-key Puts in flight at once
	exhLatencyN   = 400       // sequential requests of the allowed caller per measurement
	exhDefaultPer = 1024      // the gateway's default streams_per_caller
	exhWatchesPer = 50        // watches_per_caller for the watch-limit case

	exhWaitLong = 60 * time.Second
)

// etcd's own answers, as etcd clients match them.
var (
	exhDenied  = rpctypes.ErrPermissionDenied.Error() // "etcdserver: permission denied"
	exhTooMany = rpctypes.ErrTooManyRequests.Error()  // "etcdserver: too many requests"
)

func TestExhaust(t *testing.T) {
	p := newPKI(t, "nobody", "web", "admin")
	// fsync off: an in-process etcd on a disk shared with other work would
	// put disk noise into the allowed caller's Put latency, which is about
	// the gateway's CPU, not the disk.
	ec := startEtcd(t, p, 1, func(c *embed.Config) { c.UnsafeNoFsync = true })
	e := &exhEnv{p: p, ec: ec, direct: exhDirect(t, p, ec.endpoints), etcdHTTP: &http.Client{
		Transport: &http.Transport{TLSClientConfig: exhTLS(t, p, "etcd")}, Timeout: 10 * time.Second}}
	e.intentions = mustRead(t, filepath.Join(repoRoot, "policies", "intentions.yaml"))

	t.Run("NoRightsHolds20000StreamsAndSendsHugeKeys", e.noRights)
	t.Run("StreamsBeyondPerCallerLimit", e.streamLimit)
	t.Run("WatchesBeyondPerCallerLimit", e.watchLimit)
}

type exhEnv struct {
	p          *pki
	ec         *etcdCluster
	direct     *clientv3.Client
	etcdHTTP   *http.Client
	intentions string
}

// ---------------------------------------------------------------------------
// 1. 20,000 refused watch streams and huge denied keys.

func (e *exhEnv) noRights(t *testing.T) {
	gw := startGateway(t, e.p, e.ec, gatewayOpts{policyDir: copyPolicies(t, e.intentions),
		limits: config.LimitsConfig{StreamsPerCaller: 25000, Streams: 30000},
		// pprof only to force a GC (heap?gc=1) before reading the live heap.
		debug: config.DebugConfig{Pprof: true}})
	web := pb.NewKVClient(exhConn(t, e.p, gw.addr, "web"))

	// Warm up the allowed caller's path (connection, policy cache, etcd).
	exhWebLoop(t, web, 100, "warm")
	before := exhGateway(t, gw, true)
	etcd0 := e.etcdWatchMetrics(t)
	woStart, woGW0, woSelf0, woBusy0 := time.Now(), exhGatewayCPU(gw), exhSelfCPU(), exhBusyCPU()
	without, _ := exhWebLoop(t, web, exhLatencyN, "without")
	{
		wall := time.Since(woStart).Seconds()
		gwCores, selfCores := (exhGatewayCPU(gw)-woGW0)/wall, (exhSelfCPU()-woSelf0).Seconds()/wall
		t.Logf("CPU during the without loop (%.1fs wall): gateway %.2f cores, test process %.2f cores, other processes %.2f cores",
			wall, gwCores, selfCores, (exhBusyCPU()-woBusy0).Seconds()/wall-gwCores-selfCores)
	}
	directKV := pb.NewKVClient(e.direct.ActiveConnection())
	directWithout, _ := exhWebLoop(t, directKV, exhLatencyN/2, "direct-without")
	t.Logf("etcd latency without attack, straight from this process: %s", exhDist(directWithout))
	t.Logf("gateway before: %v", before)
	t.Logf("etcd before: %v", etcd0)

	// The attack client: its own context, so that every stream ends when
	// it is canceled, whatever failed.
	attackCtx, stopAttack := context.WithTimeout(context.Background(), 150*time.Second)
	defer stopAttack()
	conns := make([]*grpc.ClientConn, exhConns)
	for i := range conns {
		conns[i] = exhConn(t, e.p, gw.addr, "nobody")
	}

	start := time.Now()
	streams := exhOpenDenied(t, attackCtx, conns, exhStreams, false)
	t.Logf("opened %d refused watch streams over %d connections in %v", len(streams), exhConns, time.Since(start).Round(time.Millisecond))
	if len(streams) != exhStreams {
		t.FailNow()
	}
	held := exhGateway(t, gw, true)
	t.Logf("gateway holding %d streams: %v", exhStreams, held)
	exhTopGoroutines(t, gw, 4)

	// The streams alone (no burst yet), for the record: they should cost
	// the allowed caller nothing.
	heldOnly, _ := exhWebLoop(t, web, exhLatencyN, "held")
	t.Logf("web latency with the streams held, before the burst: %s", exhDist(heldOnly))

	// The huge-key burst, while the allowed caller's "with" loop runs.
	rev0 := exhRev(t, e.direct)
	putsUp0 := e.etcdMetric(t, "grpc_server_started_total", `grpc_method="Put"`)
	burstConns := []pb.KVClient{pb.NewKVClient(conns[0]), pb.NewKVClient(conns[1])}
	loopDone := make(chan struct{})
	var peak exhPeak
	samplerDone := make(chan struct{})
	burstDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for {
			if m, err := exhScrapeGateway(gw); err == nil {
				peak.add(m)
			}
			select {
			case <-burstDone:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	b := &exhBurst{min: exhBigPuts, max: 20 * exhBigPuts, until: loopDone, limit: 90 * time.Second}
	go func() { defer close(burstDone); b.run(attackCtx, burstConns) }()
	// The "with" loop starts once huge keys are flowing.
	exhEventually(t, exhWaitLong, "the first huge-key Puts answered", func() bool { return b.done.Load() >= exhBigConc })
	// For the record: the same loop straight to etcd (which lives in this
	// process, as the attack's client does), to tell this process's own
	// delays from the gateway's.
	directWith, directPuts := exhWebLoop(t, directKV, exhLatencyN/2, "direct-with")
	t.Logf("etcd latency, straight from this process, during the burst: %s", exhDist(directWith))
	loopStart, gwCPU0, selfCPU0, busy0 := time.Now(), exhGatewayCPU(gw), exhSelfCPU(), exhBusyCPU()
	with, webPuts := exhWebLoop(t, web, exhLatencyN, "with")
	loopEnd, gwCPU1, selfCPU1, busy1 := time.Now(), exhGatewayCPU(gw), exhSelfCPU(), exhBusyCPU()
	burstAtLoopEnd := b.done.Load()
	// The live heap while the burst still runs (forced GCs: what the
	// gateway holds for the streams and the requests in flight, without the
	// garbage of those answered).
	burstLive := exhGateway(t, gw, true)
	peak.add(burstLive)
	close(loopDone)
	<-burstDone
	<-samplerDone
	burstEnd := time.Now()
	peak.add(exhGateway(t, gw, false))
	t.Logf("huge-key burst: %d Puts of %d-byte keys, %d at a time, in %v (%.1f/s); %d answered before the with loop ended, the loop ran %v",
		b.done.Load(), exhBigKey, exhBigConc, burstEnd.Sub(b.start).Round(time.Millisecond),
		float64(b.done.Load())/burstEnd.Sub(b.start).Seconds(), burstAtLoopEnd, loopEnd.Sub(loopStart).Round(time.Millisecond))
	// Where the 2 cores went while the with loop ran: the gateway, and this
	// process (the attack's client, the allowed caller and etcd).
	wall := loopEnd.Sub(loopStart).Seconds()
	gwCores, selfCores := (gwCPU1-gwCPU0)/wall, (selfCPU1-selfCPU0).Seconds()/wall
	t.Logf("CPU during the with loop (%.1fs wall): gateway %.2f cores, test process (clients and etcd) %.2f cores, other processes %.2f cores",
		wall, gwCores, selfCores, (busy1-busy0).Seconds()/wall-gwCores-selfCores)
	if b.done.Load() < exhBigPuts {
		t.Errorf("the gateway answered only %d of %d huge-key Puts in %v", b.done.Load(), exhBigPuts, b.limit)
	}
	// The refusal throttle held the attacker to what its defaults allow:
	// a 16 MiB burst, then 16 MiB/s of refused bytes (each refusal its size
	// plus 4 KiB), plus what was already read when it fell into debt (the
	// Puts in flight). Faster answers mean the gateway did the work of
	// refusing more than it lets a caller buy.
	{
		el := burstEnd.Sub(b.start).Seconds()
		const rate, burst, perRefusal = 16 << 20, 16 << 20, exhBigKey + 4<<10
		most := int64((burst+rate*el)/perRefusal) + 2*exhBigConc
		t.Logf("huge-key Puts answered: %d in %.1fs; the refusal throttle allows at most %d", b.done.Load(), el, most)
		if b.done.Load() > most {
			t.Errorf("the gateway answered %d refused huge-key Puts in %.1fs, more than the refusal throttle's %d", b.done.Load(), el, most)
		}
	}
	if n := b.denied.Load(); n != b.done.Load() {
		t.Errorf("huge-key Puts: %d of %d answered %q; first other answer: %v", n, b.done.Load(), exhDenied, b.firstOther())
	}
	if burstAtLoopEnd == b.done.Load() {
		t.Errorf("the huge-key burst ended before the with loop did: the loop was not measured under attack")
	}

	// Latency is measured and printed, side by side in this run, not
	// asserted: timing goals belong to benchmarks (`make bench` prints the
	// same comparison, with the refusal throttle on and off, and judges
	// the goal of ≤ 2×), and a 2-core machine shared with the attacker's
	// own client (and -race) makes a timed assertion a coin toss. Measured
	// here: 1.06× (9.9× before the throttle: each refused 1.5 MB Put costs
	// TLS, HTTP/2 and decoding before any decision, and the attacker's
	// client got them answered 180 times a second).
	p99w, p99a := exhP99(without), exhP99(with)
	ratio := float64(p99a) / float64(p99w)
	t.Logf("web latency without attack: %s", exhDist(without))
	t.Logf("web latency with attack:    %s", exhDist(with))
	t.Logf("web p99 with/without = %v / %v = %.2f (goal ≤ 2)", p99a, p99w, ratio)

	// etcd did nothing for the attack: its revision moved by the allowed
	// caller's Puts alone, it was sent no other Put, it stored no huge key,
	// and it holds no watch stream or watcher for the gateway.
	rev1 := exhRev(t, e.direct)
	putsUp := e.etcdMetric(t, "grpc_server_started_total", `grpc_method="Put"`) - putsUp0
	webPuts += directPuts // the direct loop's Puts move the revision too
	t.Logf("etcd revision %d → %d (allowed Puts meanwhile: %d); Puts etcd served meanwhile: %.0f", rev0, rev1, webPuts, putsUp)
	if rev1-rev0 != int64(webPuts) {
		t.Errorf("etcd revision moved by %d, want %d (the allowed Puts only)", rev1-rev0, webPuts)
	}
	if putsUp != float64(webPuts) {
		t.Errorf("etcd served %.0f Puts during the burst, want %d (the allowed ones only)", putsUp, webPuts)
	}
	for _, pre := range exhBigPrefixes {
		r, err := e.direct.Get(exhCtx(t), pre, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if r.Count != 0 {
			t.Errorf("etcd holds %d keys under %q, written by a caller with no rights", r.Count, pre)
		}
	}
	etcd1 := e.etcdWatchMetrics(t)
	t.Logf("etcd at the peak: %v", etcd1)
	for _, k := range []string{"watch_streams", "watchers", "watch_rpcs_started", "watch_rpcs_open"} {
		if etcd1[k] > etcd0[k] {
			t.Errorf("etcd %s grew from %.0f to %.0f while a caller with no rights held %d watch streams", k, etcd0[k], etcd1[k], exhStreams)
		}
	}

	// Bounds on the gateway.
	//
	// Goroutines: a refused or idle watch stream is designed to cost one
	// goroutine (its handler) and nothing upstream; measured: 1.00 per
	// stream (20,083 with 20,000 held, baseline 55). Allow 1.2 per stream
	// over the baseline, for the connections' readers, writers and
	// keepalives and the burst's handlers in flight: a second goroutine per
	// stream fails.
	goroutineBound := before.goroutines + 1.2*exhStreams
	// Heap, streams alone (read after forced GCs): measured 5.3 KiB of
	// live heap and 7.3-8.3 KiB in use per refused stream under -race,
	// 5.9-6.2 and 8.5-9.5 KiB without (2,000 streams): 150-172 MiB in use
	// for 20,000. Bound: 16 KiB in use per stream, about twice that; -race
	// does not inflate it (its shadow memory is outside the Go heap, though
	// RSS reaches 4 GiB with 20,000 streams).
	heldBound := before.heapInuse + exhStreams*16*1024
	// Heap, live while the burst runs (forced GCs): what the streams and
	// the 8 huge-key Puts in flight hold. Measured 16.6 MiB per Put in
	// flight (11× its key: gRPC's buffer, the decoded message, the
	// policy's input, a reason quoting the whole key, a log line of that
	// reason), 8.3-8.5 MiB on a scratch build that quotes and logs no huge
	// key. Bound: 32 MiB per Put in flight, twice the gateway's own. Under
	// -race the reading varies from 3 to 45 MiB per Put (forced GCs are slow
	// there, and the burst allocates meanwhile): 3× the bound.
	burstLiveBound := held.heapAlloc + exhBigConc*32<<20
	if raceEnabled {
		burstLiveBound = held.heapAlloc + 3*exhBigConc*32<<20
	}
	// Heap in use at the peak, garbage included: measured 150-160 MiB over
	// the streams alone without -race, 340-405 MiB with it (slower GC and
	// instrumented allocations at 2-9 answers a second). Bound: twice that
	// over the streams' bound, 320 MiB, and 800 MiB under -race. A gateway
	// that keeps each huge key fails these bounds and the one after the
	// attack (its decision cache did until it was bounded in bytes: 2 GiB
	// in use at the peak, 1.1 GiB still live after 400 Puts).
	peakExtra := 320.0 * (1 << 20)
	if raceEnabled {
		peakExtra = 800 * (1 << 20)
	}
	heapBound := heldBound + peakExtra
	t.Logf("gateway peak: %v (bounds: goroutines ≤ %.0f; heap in use ≤ %.1f MiB holding the streams, ≤ %.1f MiB at the peak; race=%v)",
		peak.m, goroutineBound, heldBound/(1<<20), heapBound/(1<<20), raceEnabled)
	t.Logf("gateway live heap during the burst (forced GCs): %.1f MiB, %.1f MiB over the streams alone (%.1f MiB per huge-key Put in flight; bound %.1f MiB)",
		burstLive.heapAlloc/(1<<20), (burstLive.heapAlloc-held.heapAlloc)/(1<<20), (burstLive.heapAlloc-held.heapAlloc)/exhBigConc/(1<<20),
		burstLiveBound/(1<<20))
	t.Logf("gateway per held stream: %.2f goroutines, %.1f KiB live heap, %.1f KiB heap in use",
		(held.goroutines-before.goroutines)/exhStreams, (held.heapAlloc-before.heapAlloc)/exhStreams/1024,
		(held.heapInuse-before.heapInuse)/exhStreams/1024)
	if peak.m.goroutines > goroutineBound {
		t.Errorf("gateway goroutines at the peak: %.0f > %.0f (baseline %.0f + 1.2 × %d streams)",
			peak.m.goroutines, goroutineBound, before.goroutines, exhStreams)
		exhTopGoroutines(t, gw, 10)
	}
	if held.heapInuse > heldBound {
		t.Errorf("gateway heap in use holding %d refused streams: %.1f MiB > %.1f MiB", exhStreams, held.heapInuse/(1<<20), heldBound/(1<<20))
	}
	if burstLive.heapAlloc > burstLiveBound {
		t.Errorf("gateway live heap during the huge-key burst: %.1f MiB > %.1f MiB", burstLive.heapAlloc/(1<<20), burstLiveBound/(1<<20))
	}
	if peak.m.heapInuse > heapBound {
		t.Errorf("gateway heap in use at the peak of the huge-key burst: %.1f MiB > %.1f MiB", peak.m.heapInuse/(1<<20), heapBound/(1<<20))
	}

	// The attack ends: every stream is canceled; the gateway gives back its
	// goroutines and heap, and etcd still saw nothing.
	stopAttack()
	for _, c := range conns {
		c.Close()
	}
	closed := time.Now()
	for {
		m, err := exhScrapeGateway(gw)
		if err == nil && m.goroutines <= before.goroutines+50 {
			t.Logf("gateway goroutines back to %.0f %v after the streams were canceled", m.goroutines, time.Since(closed).Round(time.Millisecond))
			break
		}
		if time.Since(closed) > 30*time.Second {
			t.Errorf("gateway goroutines 30s after the streams were canceled: %v (baseline %.0f)", m, before.goroutines)
			exhTopGoroutines(t, gw, 10)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	after := exhGateway(t, gw, true)
	t.Logf("gateway after: %v", after)
	// Live heap after forced GCs: no per-stream state and no huge key is
	// kept. The decision cache may keep the small decisions of the refused
	// creates (about 6,700 distinct keys here): measured +2 MiB (2,000
	// streams) to +13 MiB (20,000, -race) on a gateway that caches no huge
	// key. Bound: 32 MiB over the baseline.
	if after.heapAlloc > before.heapAlloc+32<<20 {
		t.Errorf("gateway live heap after the attack: %.1f MiB, baseline %.1f MiB", after.heapAlloc/(1<<20), before.heapAlloc/(1<<20))
	}
	etcd2 := e.etcdWatchMetrics(t)
	t.Logf("etcd after: %v", etcd2)
	if etcd2["watch_rpcs_started"] != etcd0["watch_rpcs_started"] {
		t.Errorf("etcd Watch RPCs started: %.0f → %.0f", etcd0["watch_rpcs_started"], etcd2["watch_rpcs_started"])
	}
}

// exhBigPrefixes are where the huge denied keys point: the allowed caller's
// own tree, the top level of /shared/ (readable, not writable, by nobody)
// and a tree no one is granted.
var exhBigPrefixes = []string{"/app/exhaust-big/", "/shared/exhaust-big-", "/exhaust-big/"}

// exhBurst sends denied Puts with huge, distinct keys, exhBigConc at a
// time: at least min, and on until until is closed (at most max), none
// starting after limit.
type exhBurst struct {
	min, max int64
	until    <-chan struct{}
	limit    time.Duration // no Put starts after this long

	start        time.Time
	seq          atomic.Int64
	done, denied atomic.Int64
	mu           sync.Mutex
	other        error
}

func (b *exhBurst) firstOther() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.other
}

func (b *exhBurst) run(ctx context.Context, kvs []pb.KVClient) {
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	filler := make([]byte, exhBigKey)
	for i := range filler {
		filler[i] = alnum[rand.IntN(len(alnum))]
	}
	b.start = time.Now()
	var wg sync.WaitGroup
	for w := range exhBigConc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := slices.Clone(filler)
			kv := kvs[w%len(kvs)]
			for {
				n := b.seq.Add(1)
				if n > b.max || ctx.Err() != nil || time.Since(b.start) > b.limit {
					return
				}
				if n > b.min {
					select {
					case <-b.until:
						return
					default:
					}
				}
				// Distinct keys: a prefix, the sequence number, and filler
				// (no '/', so that /shared/... stays one level deep).
				head := fmt.Sprintf("%s%08d-", exhBigPrefixes[n%int64(len(exhBigPrefixes))], n)
				copy(key, head)
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := kv.Put(cctx, &pb.PutRequest{Key: key, Value: []byte("x")})
				cancel()
				b.done.Add(1)
				if s, _ := status.FromError(err); err != nil && s.Code() == codes.PermissionDenied && s.Message() == exhDenied {
					b.denied.Add(1)
					continue
				}
				b.mu.Lock()
				if b.other == nil {
					b.other = fmt.Errorf("Put #%d: %v", n, err)
				}
				b.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// exhOpenDenied opens n watch streams over conns as a caller who may not
// watch, each sending one create on a key it may not watch and reading the
// refusal (created and canceled, etcd's permission denied). The streams stay
// open until ctx ends. It fails the test on the first other answer; with
// retryTooMany, a stream refused as beyond the limits is tried again.
func exhOpenDenied(t *testing.T, ctx context.Context, conns []*grpc.ClientConn, n int, retryTooMany bool) []pb.Watch_WatchClient {
	t.Helper()
	wcs := make([]pb.WatchClient, len(conns))
	for i, c := range conns {
		wcs[i] = pb.NewWatchClient(c)
	}
	out := make([]pb.Watch_WatchClient, n)
	var next atomic.Int64
	var failed atomic.Bool
	var firstErr error
	var mu sync.Mutex
	// The opening phase is bounded: past it every stream is ended, which
	// ends every Recv still waiting.
	openCtx, cancel := context.WithCancel(ctx)
	watchdog := time.AfterFunc(90*time.Second, func() {
		mu.Lock()
		if firstErr == nil {
			firstErr = errors.New("streams not all answered in 90s")
		}
		mu.Unlock()
		failed.Store(true)
		cancel()
	})
	var wg sync.WaitGroup
	for range exhOpeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				s, err := exhDeniedStream(openCtx, wcs[i%len(wcs)], exhDeniedCreate(i))
				for retryTooMany && exhIsTooMany(err) && !failed.Load() {
					time.Sleep(10 * time.Millisecond)
					s, err = exhDeniedStream(openCtx, wcs[i%len(wcs)], exhDeniedCreate(i))
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("stream %d: %w", i, err)
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
				out[i] = s
			}
		}()
	}
	wg.Wait()
	if !watchdog.Stop() || failed.Load() {
		cancel()
		t.Errorf("opening %d refused watch streams: %v", n, firstErr)
		return nil
	}
	// openCtx must outlive this function: the streams are held until ctx
	// ends, and cancel is released with it.
	context.AfterFunc(ctx, cancel)
	return out
}

// exhDeniedCreate varies the create a caller with no watch right sends:
// one key in someone else's tree, a prefix, from-key, the empty key, a key
// it may read but not watch, bytes that are not UTF-8.
func exhDeniedCreate(i int) *pb.WatchCreateRequest {
	switch i % 6 {
	case 0:
		return &pb.WatchCreateRequest{Key: fmt.Appendf(nil, "/app/exhaust/%d", i)}
	case 1:
		return &pb.WatchCreateRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0")}
	case 2:
		return &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, PrevKv: true}
	case 3:
		return &pb.WatchCreateRequest{}
	case 4:
		return &pb.WatchCreateRequest{Key: []byte("/shared/motd"), WatchId: int64(i)}
	default:
		return &pb.WatchCreateRequest{Key: fmt.Appendf(nil, "\xff\x00%d\xfe", i), ProgressNotify: true}
	}
}

// exhDeniedStream opens a watch stream, sends cr and checks it is refused
// as etcd refuses a watch it may not serve.
func exhDeniedStream(ctx context.Context, wc pb.WatchClient, cr *pb.WatchCreateRequest) (pb.Watch_WatchClient, error) {
	s, err := wc.Watch(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}}); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	r, err := s.Recv()
	if err != nil {
		return nil, fmt.Errorf("recv: %w", err)
	}
	if !r.Created || !r.Canceled || r.CancelReason != exhDenied || r.WatchId != clientv3.InvalidWatchID {
		return nil, fmt.Errorf("answer %v, want created and canceled, %q", r, exhDenied)
	}
	return s, nil
}

// exhWebLoop runs n sequential requests as the allowed caller, Put and
// Range in turn on keys of its own, and returns each one's latency and how
// many Puts succeeded.
func exhWebLoop(t *testing.T, kv pb.KVClient, n int, tag string) ([]time.Duration, int) {
	t.Helper()
	lat := make([]time.Duration, 0, n)
	puts := 0
	// Bounded in time: past 30 s the latencies are far out of any bound
	// already, and the rest of the test still has to run.
	deadline := time.Now().Add(30 * time.Second)
	for i := range n {
		if time.Now().After(deadline) {
			t.Logf("web loop %q: only %d of %d requests in 30s (a measurement, not a bound: see the latency comment)", tag, i, n)
			break
		}
		key := fmt.Appendf(nil, "/app/exhaust/web/%s/%d", tag, i%16)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t0 := time.Now()
		var err error
		if i%2 == 0 {
			_, err = kv.Put(ctx, &pb.PutRequest{Key: key, Value: []byte("v")})
		} else {
			_, err = kv.Range(ctx, &pb.RangeRequest{Key: key})
		}
		lat = append(lat, time.Since(t0))
		cancel()
		if err != nil {
			t.Errorf("web request %d (%s): %v", i, key, err)
			continue
		}
		if i%2 == 0 {
			puts++
		}
	}
	return lat, puts
}

func exhP99(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(math.Ceil(0.99*float64(len(s))))-1]
}

func exhDist(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[int(math.Ceil(f*float64(len(s))))-1].Round(time.Microsecond) }
	return fmt.Sprintf("n=%d p50=%v p90=%v p99=%v max=%v", len(s), q(0.5), q(0.9), q(0.99), s[len(s)-1].Round(time.Microsecond))
}

// ---------------------------------------------------------------------------
// 2. Streams beyond streams_per_caller (default 1024).

func (e *exhEnv) streamLimit(t *testing.T) {
	gw := startGateway(t, e.p, e.ec, gatewayOpts{policyDir: copyPolicies(t, e.intentions)}) // default limits
	nobody := []*grpc.ClientConn{exhConn(t, e.p, gw.addr, "nobody"), exhConn(t, e.p, gw.addr, "nobody")}
	other := exhConn(t, e.p, gw.addr, "nobody") // a third connection of the same caller
	admin := exhConn(t, e.p, gw.addr, "admin")
	webKV := pb.NewKVClient(exhConn(t, e.p, gw.addr, "web"))

	atLimit := func(round int) {
		t.Helper()
		// Beyond the limit, on any connection and any streaming RPC.
		exhRefused(t, "watch stream", func(ctx context.Context) error {
			s, err := pb.NewWatchClient(other).Watch(ctx)
			if err != nil {
				return err
			}
			_ = s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
				CreateRequest: &pb.WatchCreateRequest{Key: []byte("/app/x")}}})
			_, err = s.Recv()
			return err
		})
		exhRefused(t, "watch stream, first connection", func(ctx context.Context) error {
			s, err := pb.NewWatchClient(nobody[0]).Watch(ctx)
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		})
		exhRefused(t, "lease keep-alive stream", func(ctx context.Context) error {
			s, err := pb.NewLeaseClient(other).LeaseKeepAlive(ctx)
			if err != nil {
				return err
			}
			_ = s.Send(&pb.LeaseKeepAliveRequest{ID: 1})
			_, err = s.Recv()
			return err
		})
		exhRefused(t, "snapshot stream", func(ctx context.Context) error {
			s, err := pb.NewMaintenanceClient(other).Snapshot(ctx, &pb.SnapshotRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		})
		// Unary calls are not streams: the caller's status read still works.
		if _, err := pb.NewMaintenanceClient(other).Status(exhCtx(t), &pb.StatusRequest{}); err != nil {
			t.Errorf("round %d: nobody's status read at its stream limit: %v", round, err)
		}
		// Other callers are served: a watch stream of admin sees web's Put.
		w := exhOpenWatch(t, admin)
		key := fmt.Appendf(nil, "/app/exhaust/limit/%d", round)
		w.create(t, &pb.WatchCreateRequest{Key: key})
		if r := w.next(t); !r.Created || r.Canceled {
			t.Fatalf("round %d: admin's watch create at nobody's limit: %v", round, r)
		}
		if _, err := webKV.Put(exhCtx(t), &pb.PutRequest{Key: key, Value: []byte("served")}); err != nil {
			t.Fatalf("round %d: web's Put at nobody's limit: %v", round, err)
		}
		if r := w.next(t); len(r.Events) != 1 || string(r.Events[0].Kv.Key) != string(key) || r.Events[0].Type != mvccpb.PUT {
			t.Fatalf("round %d: admin's watch got %v, want web's Put", round, r)
		}
		w.close()
	}

	// Round 1: the whole limit, then refusals.
	ctx1, cancel1 := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel1()
	if exhOpenDenied(t, ctx1, nobody, exhDefaultPer, false) == nil {
		t.FailNow()
	}
	t.Logf("round 1: nobody holds %d refused watch streams over %d connections", exhDefaultPer, len(nobody))
	atLimit(1)

	// The caller closes its streams; its slots come back: a new stream is
	// accepted soon, and then the whole limit again (so every slot was given
	// back, not only one, and the refused streams took none).
	cancel1()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel2()
	polls := 0
	exhEventually(t, exhWaitLong, "nobody may open a stream again", func() bool {
		polls++
		_, err := exhDeniedStream(ctx2, pb.NewWatchClient(other), &pb.WatchCreateRequest{Key: []byte("/app/again")})
		if err != nil && !exhIsTooMany(err) {
			t.Fatalf("a stream after closing the others: %v", err)
		}
		return err == nil
	})
	// The remaining slots may still be coming back (each stream's handler
	// ends on its own): a stream refused while they do is retried.
	if exhOpenDenied(t, ctx2, nobody, exhDefaultPer-1, true) == nil {
		t.FailNow()
	}
	t.Logf("round 2: a stream was accepted again after %d attempt(s); nobody holds %d streams again", polls, exhDefaultPer)
	atLimit(2)
	cancel2()
}

// exhRefused checks that open is refused as etcd refuses a stream beyond
// its limits: ResourceExhausted, "etcdserver: too many requests".
func exhRefused(t *testing.T, what string, open func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := open(ctx)
	if !exhIsTooMany(err) {
		t.Errorf("%s beyond the caller's stream limit: %v, want ResourceExhausted %q", what, err, exhTooMany)
	}
}

func exhIsTooMany(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	s := se.GRPCStatus()
	return s.Code() == codes.ResourceExhausted && s.Message() == exhTooMany
}

// ---------------------------------------------------------------------------
// 3. Watches beyond watches_per_caller (50).

func (e *exhEnv) watchLimit(t *testing.T) {
	gw := startGateway(t, e.p, e.ec, gatewayOpts{policyDir: copyPolicies(t, e.intentions),
		limits: config.LimitsConfig{WatchesPerCaller: exhWatchesPer}})
	web := exhConn(t, e.p, gw.addr, "web")
	webKV := pb.NewKVClient(web)
	etcd0 := e.etcdWatchMetrics(t)

	key := func(i int) []byte { return fmt.Appendf(nil, "/app/exhaust/w/%d", i) }
	s1 := exhOpenWatch(t, web)
	ids := make([]int64, exhWatchesPer)
	for i := range exhWatchesPer {
		s1.create(t, &pb.WatchCreateRequest{Key: key(i)})
		r := s1.next(t)
		if !r.Created || r.Canceled {
			t.Fatalf("watch %d of %d: %v, want created", i+1, exhWatchesPer, r)
		}
		ids[i] = r.WatchId
	}
	refused := func(s *exhWatch, what string, cr *pb.WatchCreateRequest) {
		t.Helper()
		s.create(t, cr)
		r := s.next(t)
		if !r.Created || !r.Canceled || r.CancelReason != exhTooMany || r.WatchId != clientv3.InvalidWatchID {
			t.Errorf("%s: %v, want created and canceled, %q", what, r, exhTooMany)
		}
	}
	refused(s1, "watch 51 on the same stream", &pb.WatchCreateRequest{Key: key(50)})
	refused(s1, "watch 52 on the same stream, a range", &pb.WatchCreateRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0")})
	s2 := exhOpenWatch(t, web)
	refused(s2, "watch 51 on another stream", &pb.WatchCreateRequest{Key: key(51)})
	refused(s2, "watch 51 on another stream, with a watch ID", &pb.WatchCreateRequest{Key: key(52), WatchId: 9999})

	// etcd holds the 50 watches, on one stream; the refused ones never
	// reached it (s2 opened no upstream stream).
	etcd1 := e.etcdWatchMetrics(t)
	t.Logf("etcd with %d watches held and 4 refused: %v (before: %v)", exhWatchesPer, etcd1, etcd0)
	if d := etcd1["watchers"] - etcd0["watchers"]; d != exhWatchesPer {
		t.Errorf("etcd watchers grew by %.0f, want %d", d, exhWatchesPer)
	}
	if d := etcd1["watch_streams"] - etcd0["watch_streams"]; d != 1 {
		t.Errorf("etcd watch streams grew by %.0f, want 1", d)
	}

	// The held watches still work.
	if _, err := webKV.Put(exhCtx(t), &pb.PutRequest{Key: key(7), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if r := s1.next(t); r.WatchId != ids[7] || len(r.Events) != 1 || string(r.Events[0].Kv.Key) != string(key(7)) {
		t.Fatalf("event for watch 8: %v", r)
	}

	// Canceling one frees a slot, for any stream of the caller; one only.
	s1.cancel(t, ids[7])
	if r := s1.next(t); !r.Canceled || r.WatchId != ids[7] {
		t.Fatalf("cancel of watch %d: %v", ids[7], r)
	}
	s2.create(t, &pb.WatchCreateRequest{Key: key(53)})
	if r := s2.next(t); !r.Created || r.Canceled {
		t.Fatalf("a watch after canceling one: %v, want created", r)
	}
	refused(s2, "a second watch after canceling one", &pb.WatchCreateRequest{Key: key(54)})

	// A stream that ends gives back every slot it held.
	s1.close()
	exhEventually(t, exhWaitLong, "slots of a closed stream given back", func() bool {
		s2.create(t, &pb.WatchCreateRequest{Key: key(55)})
		r := s2.next(t)
		if !r.Created {
			t.Fatalf("create: %v", r)
		}
		return !r.Canceled
	})
	for i := range exhWatchesPer - 2 {
		s2.create(t, &pb.WatchCreateRequest{Key: key(100 + i)})
		if r := s2.next(t); !r.Created || r.Canceled {
			t.Fatalf("watch %d on the second stream after the first closed: %v", i+3, r)
		}
	}
	refused(s2, "watch 51 after the first stream closed", &pb.WatchCreateRequest{Key: key(200)})
	s2.close()
}

// exhWatch is a raw watch stream whose responses a goroutine reads.
type exhWatch struct {
	s    pb.Watch_WatchClient
	resp chan *pb.WatchResponse
	stop context.CancelFunc
	done chan struct{}
}

func exhOpenWatch(t *testing.T, conn *grpc.ClientConn) *exhWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &exhWatch{s: s, resp: make(chan *pb.WatchResponse, 1024), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer close(w.resp)
		for {
			r, err := s.Recv()
			if err != nil {
				return
			}
			w.resp <- r
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *exhWatch) close() {
	w.stop()
	<-w.done
}

func (w *exhWatch) create(t *testing.T, cr *pb.WatchCreateRequest) {
	t.Helper()
	if err := w.s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}}); err != nil {
		t.Fatalf("watch create: %v", err)
	}
}

func (w *exhWatch) cancel(t *testing.T, id int64) {
	t.Helper()
	if err := w.s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{
		CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}); err != nil {
		t.Fatalf("watch cancel: %v", err)
	}
}

// next is the next response; it fails the test after 20 s or when the
// stream ended.
func (w *exhWatch) next(t *testing.T) *pb.WatchResponse {
	t.Helper()
	select {
	case r, ok := <-w.resp:
		if !ok {
			t.Fatal("watch stream ended")
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no watch response in 20s")
	}
	return nil
}

// ---------------------------------------------------------------------------
// Metrics.

// exhMetrics are the gateway's Go runtime gauges.
type exhMetrics struct {
	goroutines, heapInuse, heapAlloc, rss float64
}

func (m exhMetrics) String() string {
	return fmt.Sprintf("goroutines=%.0f heap_inuse=%.1fMiB heap_alloc=%.1fMiB rss=%.1fMiB",
		m.goroutines, m.heapInuse/(1<<20), m.heapAlloc/(1<<20), m.rss/(1<<20))
}

type exhPeak struct {
	mu sync.Mutex
	m  exhMetrics
}

func (p *exhPeak) add(m exhMetrics) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m.goroutines = max(p.m.goroutines, m.goroutines)
	p.m.heapInuse = max(p.m.heapInuse, m.heapInuse)
	p.m.heapAlloc = max(p.m.heapAlloc, m.heapAlloc)
	p.m.rss = max(p.m.rss, m.rss)
}

// exhGateway reads the gateway's gauges; with gc, after a forced GC (so
// that heap_alloc is the live heap).
func exhGateway(t *testing.T, gw *gateway, gc bool) exhMetrics {
	t.Helper()
	// Two GCs: pools (sync.Pool) keep what they held for one more.
	for range exhBool(gc, 2) {
		if _, err := exhGet(http.DefaultClient, "http://"+gw.admin+"/debug/pprof/heap?gc=1"); err != nil {
			t.Fatalf("forcing a GC in the gateway: %v", err)
		}
	}
	m, err := exhScrapeGateway(gw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func exhBool(b bool, n int) int {
	if b {
		return n
	}
	return 0
}

func exhScrapeGateway(gw *gateway) (exhMetrics, error) {
	text, err := exhGet(http.DefaultClient, "http://"+gw.admin+"/metrics")
	if err != nil {
		return exhMetrics{}, err
	}
	m := exhMetrics{
		goroutines: exhSum(text, "go_goroutines"),
		heapInuse:  exhSum(text, "go_memstats_heap_inuse_bytes"),
		heapAlloc:  exhSum(text, "go_memstats_heap_alloc_bytes"),
		rss:        exhSum(text, "process_resident_memory_bytes"),
	}
	if m.goroutines == 0 || m.heapInuse == 0 {
		return m, errors.New("no Go runtime metrics on the gateway's /metrics")
	}
	return m, nil
}

// exhTopGoroutines logs the gateway's largest groups of goroutines.
func exhTopGoroutines(t *testing.T, gw *gateway, n int) {
	t.Helper()
	text, err := exhGet(http.DefaultClient, "http://"+gw.admin+"/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Logf("goroutine profile: %v", err)
		return
	}
	type group struct {
		n    int
		top  string
		head string
	}
	var groups []group
	for g := range strings.SplitSeq(text, "\n\n") {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		if len(lines) < 2 {
			continue
		}
		c, _, ok := strings.Cut(lines[0], " @")
		k, err := strconv.Atoi(c)
		if !ok || err != nil {
			continue
		}
		var fns []string
		for _, l := range lines[1:] {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" {
				fns = append(fns, f[2])
			}
			if len(fns) == 3 {
				break
			}
		}
		groups = append(groups, group{n: k, top: strings.Join(fns, " < ")})
	}
	slices.SortFunc(groups, func(a, b group) int { return b.n - a.n })
	for _, g := range groups[:min(n, len(groups))] {
		t.Logf("  %6d goroutines: %s", g.n, g.top)
	}
}

// exhGatewayCPU is the CPU time the gateway process used so far, in seconds.
func exhGatewayCPU(gw *gateway) float64 {
	text, err := exhGet(http.DefaultClient, "http://"+gw.admin+"/metrics")
	if err != nil {
		return math.NaN()
	}
	return exhSum(text, "process_cpu_seconds_total")
}

// exhBusyCPU is the CPU time the whole machine spent outside idle and
// iowait so far (/proc/stat), to see what other processes took.
func exhBusyCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest times are in user already
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

// exhSelfCPU is the CPU time this process used so far.
func exhSelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// etcdWatchMetrics reads what etcd itself holds for watchers.
func (e *exhEnv) etcdWatchMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	text, err := exhGet(e.etcdHTTP, e.ec.endpoints[0]+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	started := exhSum(text, "grpc_server_started_total", `grpc_method="Watch"`)
	handled := exhSum(text, "grpc_server_handled_total", `grpc_method="Watch"`)
	return map[string]float64{
		"watch_streams":      exhSum(text, "etcd_debugging_mvcc_watch_stream_total"),
		"watchers":           exhSum(text, "etcd_debugging_mvcc_watcher_total"),
		"watch_rpcs_started": started,
		"watch_rpcs_open":    started - handled,
	}
}

func (e *exhEnv) etcdMetric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	text, err := exhGet(e.etcdHTTP, e.ec.endpoints[0]+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return exhSum(text, name, labels...)
}

func exhGet(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// exhSum sums the samples of name whose labels contain every one of labels.
func exhSum(text, name string, labels ...string) float64 {
	var sum float64
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(rest, l)
		}
		f := strings.Fields(rest)
		if !match || len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// ---------------------------------------------------------------------------
// Plumbing.

func exhTLS(t *testing.T, p *pki, who string) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.path(who+".pem"), p.path(who+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(mustRead(t, p.bundle()))) {
		t.Fatal("no certificates in the bundle")
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// exhConn is a raw gRPC connection to addr with who's SVID.
func exhConn(t *testing.T, p *pki, addr, who string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(exhTLS(t, p, who))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// exhDirect is a client straight to etcd with the harness's etcd
// certificate, never through the gateway.
func exhDirect(t *testing.T, p *pki, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: exhTLS(t, p, "etcd"),
		DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func exhCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func exhRev(t *testing.T, c *clientv3.Client) int64 {
	t.Helper()
	r, err := c.Get(exhCtx(t), "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

// exhEventually polls cond every 10 ms until it holds, failing after d.
func exhEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
