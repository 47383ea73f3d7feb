package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/config"
)

// The attack: a caller with no rights (spiffe://example.org/nobody, in no
// intention) sends Puts with 1.5 MB keys, attackInFlight at a time over
// attackConns connections, as fast as the gateway answers; every one is
// denied. Meanwhile the allowed caller's Range latency is measured at
// conc=1, and compared with the same loop without the attack, on the same
// gateway, in the same run.
const (
	attackKeyBytes = 1_500_000
	attackInFlight = 8
	attackConns    = 2
)

// attackVariant is one gateway of the attack table.
type attackVariant struct {
	label  string              // the throttle column
	limits config.LimitsConfig // the config's limits section
}

// attackVariants: the gateway as shipped, and with the refusal throttle
// out of reach (a rate and burst no attack spends), to show what it buys.
func attackVariants() []attackVariant {
	return []attackVariant{
		{label: "default (16 MiB/s)"},
		{label: "off", limits: config.LimitsConfig{RefusedBytesPerSecond: 1 << 40, RefusedBurstBytes: 1 << 40}},
	}
}

func attackPorts() int { return 2 * len(attackVariants()) }

// attackRow is one variant's measurements, rounds merged.
type attackRow struct {
	v             attackVariant
	without, with sample
	attackPuts    int64         // answered during the with runs
	attackTime    time.Duration // the with runs' wall time
	otherAnswers  int64         // attack Puts not answered with permission denied
	firstOther    error
}

// attackBench prints the attack table and its goal line: the allowed
// caller's p99 under attack within 2× of its p99 without, for the gateway
// as shipped. It returns true when some run failed.
func attackBench(ctx context.Context, o options, dir string, ports []int, gatewayBin, etcdURL string, pk *pki, certs map[string]svid) (bool, error) {
	clientTLS, err := pk.clientTLS(certs["bench"])
	if err != nil {
		return true, err
	}
	nobodyTLS, err := pk.clientTLS(certs["nobody"])
	if err != nil {
		return true, err
	}
	var rows []*attackRow
	failed := false
	for i, v := range attackVariants() {
		g := gatewayVariant{name: fmt.Sprintf("storegate-attack-%d", i), intentions: 20, cache: true, limits: v.limits}
		p, t, err := startGateway(ctx, gatewayBin, dir, g, o.policies, ports[2*i], ports[2*i+1], etcdURL, pk, certs["gateway"], 1, clientTLS)
		if err != nil {
			return true, err
		}
		row := &attackRow{v: v}
		rows = append(rows, row)
		err = runAttack(ctx, o, t, nobodyTLS, row)
		t.close()
		p.stop()
		if err != nil {
			return true, err
		}
		slices.Sort(row.without.lat)
		slices.Sort(row.with.lat)
		failed = failed || row.without.err != nil || row.with.err != nil || row.otherAnswers > 0
	}
	reportAttack(os.Stdout, rows)
	return failed, nil
}

func runAttack(ctx context.Context, o options, t *target, nobodyTLS *tls.Config, row *attackRow) error {
	endpoint := t.endpoint[len("https://"):]
	conns := make([]*grpc.ClientConn, attackConns)
	for i := range conns {
		c, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(credentials.NewTLS(nobodyTLS)),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(4<<20)))
		if err != nil {
			return err
		}
		defer c.Close()
		conns[i] = c
	}
	fmt.Fprintf(os.Stderr, "bench: attack, throttle %s\n", row.v.label)
	_ = load(ctx, t, opRange, 1, o.warmup)
	for range o.rounds {
		row.without.merge(load(ctx, t, opRange, 1, o.duration))
		a := startHugeKeys(ctx, conns)
		// The attack is under way once its first answers are in.
		for a.done.Load() < attackInFlight && ctx.Err() == nil && time.Since(a.start) < 30*time.Second {
			time.Sleep(10 * time.Millisecond) // polling a counter, bounded above
		}
		n0, t0 := a.done.Load(), time.Now()
		row.with.merge(load(ctx, t, opRange, 1, o.duration))
		row.attackPuts += a.done.Load() - n0
		row.attackTime += time.Since(t0)
		a.stop()
		row.otherAnswers += a.other.Load()
		if row.firstOther == nil {
			row.firstOther = a.firstOther
		}
	}
	return ctx.Err()
}

// hugeKeys is a running attack.
type hugeKeys struct {
	start       time.Time
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	done, other atomic.Int64
	mu          sync.Mutex
	firstOther  error
}

func startHugeKeys(ctx context.Context, conns []*grpc.ClientConn) *hugeKeys {
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	filler := make([]byte, attackKeyBytes)
	for i := range filler {
		filler[i] = alnum[rand.IntN(len(alnum))]
	}
	actx, cancel := context.WithCancel(ctx)
	a := &hugeKeys{start: time.Now(), cancel: cancel}
	var seq atomic.Int64
	for w := range attackInFlight {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			kv := pb.NewKVClient(conns[w%len(conns)])
			key := slices.Clone(filler)
			for actx.Err() == nil {
				copy(key, fmt.Sprintf("/attack/%08d-", seq.Add(1)))
				_, err := kv.Put(actx, &pb.PutRequest{Key: key, Value: []byte("x")})
				if actx.Err() != nil {
					return // stopped: the answer, if any, is not counted
				}
				a.done.Add(1)
				if st := status.Convert(err); err == nil || st.Code() != codes.PermissionDenied || st.Message() != rpctypes.ErrPermissionDenied.Error() {
					a.other.Add(1)
					a.mu.Lock()
					if a.firstOther == nil {
						a.firstOther = fmt.Errorf("attack Put answered %v, want %q", err, rpctypes.ErrPermissionDenied.Error())
					}
					a.mu.Unlock()
				}
			}
		}()
	}
	return a
}

func (a *hugeKeys) stop() {
	a.cancel()
	a.wg.Wait()
}

// reportAttack prints the attack table and the goal line.
func reportAttack(w io.Writer, rows []*attackRow) {
	fmt.Fprintf(w, "\nAn allowed caller's etcd Range (conc=1) while a caller with no rights sends denied Puts with %.1f MB keys, %d in flight:\n",
		float64(attackKeyBytes)/1e6, attackInFlight)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "refusal throttle\tp99 without\tp99 with\tratio\tp50 without\tp50 with\tattack Puts/s\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\t%.1f\t\n", r.v.label,
			fmtDur(r.without.quantile(0.99)), fmtDur(r.with.quantile(0.99)), attackRatio(r),
			fmtDur(r.without.quantile(0.5)), fmtDur(r.with.quantile(0.5)),
			float64(r.attackPuts)/r.attackTime.Seconds())
	}
	tw.Flush()
	for _, r := range rows {
		if r.otherAnswers > 0 {
			fmt.Fprintf(w, "attack, throttle %s: %d Puts not denied: %v\n", r.v.label, r.otherAnswers, r.firstOther)
		}
		for _, s := range []sample{r.without, r.with} {
			if s.err != nil {
				fmt.Fprintf(w, "attack, throttle %s: the allowed caller's run failed: %v\n", r.v.label, s.err)
			}
		}
	}
	r := rows[0]
	verdict := "met"
	switch {
	case r.without.err != nil || r.with.err != nil || len(r.with.lat) == 0:
		verdict = "UNKNOWN (a run failed)"
	case attackRatio(r) > 2:
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "goal: the allowed caller's p99 under attack within 2x of its p99 without (gateway as shipped): %s (%.2fx)\n", verdict, attackRatio(r))
}

func attackRatio(r *attackRow) float64 {
	w := r.without.quantile(0.99)
	if w <= 0 {
		return 0
	}
	return float64(r.with.quantile(0.99)) / float64(w)
}
