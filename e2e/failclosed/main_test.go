package failclosed

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/storegate/storegate/internal/testenv"
)

// gatewayBin is the gateway under test, built from this tree; pluginDir
// holds the example plugins (make plugins).
var gatewayBin, pluginDir string

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithPlugins(m, raceEnabled, &gatewayBin, &pluginDir))
}

// kvClient is a raw etcd KV client of caller on the gateway's etcd front:
// no etcd client library in between, so no retries and no deadline unless
// the test sets one.
func kvClient(t *testing.T, p *testenv.PKI, caller, addr string) (pb.KVClient, *grpc.ClientConn) {
	t.Helper()
	c, err := p.ClientTLS(caller)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(c)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewKVClient(conn), conn
}

// inEtcd checks, through direct (a client of etcd itself), that etcd
// holds each key of held exactly when held says so, after stage.
func inEtcd(ctx context.Context, t *testing.T, direct *clientv3.Client, stage string, held map[string]bool) {
	t.Helper()
	for key, want := range held {
		r, err := direct.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(r.Kvs) == 1; got != want {
			t.Errorf("%s: %s in etcd: %v, want %v", stage, key, got, want)
		}
	}
}

// adminGet is the body of an admin endpoint.
func adminGet(ctx context.Context, g *testenv.Gateway, path string) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.Admin+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b), err
}

// goroutines is the gateway's goroutine count (/debug/pprof, cfg.Debug.Pprof).
func goroutines(ctx context.Context, g *testenv.Gateway) (int, error) {
	_, body, err := adminGet(ctx, g, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	var n int
	if _, err := fmt.Sscanf(body, "goroutine profile: total %d", &n); err != nil {
		return 0, fmt.Errorf("goroutine profile: %w: %.80q", err, body)
	}
	return n, nil
}
