package etcd

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestUpstreamFailuresSayNoMore: with etcd gone, a caller is told
// Unavailable (or DeadlineExceeded), which it retries, and nothing of
// where etcd is or how the gateway reaches it; etcd's own errors and the
// gateway's pass as they are.
func TestUpstreamFailuresSayNoMore(t *testing.T) {
	e := newEnv(t, envConfig{})
	kv := e.kv(t, "web")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/app/k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	etcdHost := strings.TrimPrefix(e.etcdURL, "https://")
	e.etcd.Kill(0)
	seen := map[codes.Code]bool{}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("/app/k")})
		cancel()
		st, _ := status.FromError(err)
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
		default:
			t.Fatalf("Range %d with etcd gone: %v, want Unavailable or DeadlineExceeded", i, err)
		}
		seen[st.Code()] = true
		for _, leak := range []string{etcdHost, "127.0.0.1", "dial", "transport"} {
			if strings.Contains(st.Message(), leak) {
				t.Fatalf("Range %d with etcd gone: %q tells the caller %q", i, st.Message(), leak)
			}
		}
	}
	t.Logf("codes seen with etcd gone: %v", seen)

	for _, tc := range []struct {
		in   error
		same bool
	}{
		{rpctypes.ErrGRPCNoLeader, true},
		{rpctypes.ErrGRPCLeaseNotFound, true},
		{rpctypes.ErrGRPCCompacted, true},
		{status.Error(codes.Unavailable, "storegate: watch fell behind; resume from the last revision received"), true},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.5:2379: connect: connection refused"`), false},
		{status.Error(codes.Unavailable, "error reading from server: read tcp 10.0.0.9:5512->10.0.0.5:2379: read: connection reset by peer"), false},
		{status.Error(codes.Internal, "unexpected HTTP status code received from server: 502 (Bad Gateway)"), false},
	} {
		got := scrubbed(tc.in)
		if (got == tc.in) != tc.same || status.Code(got) != status.Code(tc.in) {
			t.Errorf("scrubbed(%v) = %v", tc.in, got)
		}
	}
}
