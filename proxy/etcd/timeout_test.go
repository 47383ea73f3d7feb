package etcd

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
)

// TestUpstreamBoundsCallsToAHungCluster proves that a unary call without a
// deadline to an etcd whose only member is stopped (SIGSTOP: its socket
// stays open, nothing answers) ends with DeadlineExceeded after about the
// configured request timeout, not after etcd's client's 100 retries or
// never; that a caller's own deadline is kept; that the member answers
// again after SIGCONT; and that nothing is left running once the upstream
// is closed.
func TestUpstreamBoundsCallsToAHungCluster(t *testing.T) {
	env := testenv.New(t)
	p := env.PKI()
	ec := env.Etcd(testenv.EtcdSpec{Binary: true, PKI: p})
	tlsCfg, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: p.Cert("gateway"), Key: p.Key("gateway"), CA: p.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const timeout = 1500 * time.Millisecond
	u, err := Dial(UpstreamConfig{Endpoints: ec.Endpoints, TLS: tlsCfg, RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	env.Eventually(time.Minute, func(ctx context.Context) error {
		_, err := u.kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
		return err
	})

	if err := ec.Members[0].Proc.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = ec.Members[0].Proc.Resume()
		}
	}()
	start := time.Now()
	_, err = u.kv.Range(context.Background(), &pb.RangeRequest{Key: []byte("k")})
	took := time.Since(start)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Range with no deadline against a stopped member: %v, want DeadlineExceeded", err)
	}
	if took < timeout-100*time.Millisecond || took > timeout+5*time.Second {
		t.Errorf("Range with no deadline gave up after %v, want about %v", took, timeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	start = time.Now()
	_, err = u.kv.Range(ctx, &pb.RangeRequest{Key: []byte("k")})
	cancel()
	if took := time.Since(start); status.Code(err) != codes.DeadlineExceeded || took > timeout {
		t.Errorf("Range with its own 300ms deadline: %v after %v, want DeadlineExceeded at the caller's deadline", err, took)
	}
	// The per-member path (Status to the leader) is bounded too.
	start = time.Now()
	if m, err := u.maintenanceFor(context.Background(), 0); err == nil {
		_, err = m.Status(context.Background(), &pb.StatusRequest{})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("Status to the stopped leader: %v, want DeadlineExceeded", err)
		}
	}
	if took := time.Since(start); took > timeout+10*time.Second {
		t.Errorf("Status to the stopped leader took %v", took)
	}

	if err := ec.Members[0].Proc.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	env.Eventually(time.Minute, func(ctx context.Context) error {
		resp, err := u.kv.Range(context.Background(), &pb.RangeRequest{Key: []byte("k")})
		if err == nil && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v") {
			t.Fatalf("after SIGCONT: %v, want k=v", resp.Kvs)
		}
		return err
	})
}
