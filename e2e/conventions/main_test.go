package conventions

import (
	"context"
	"crypto/tls"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
)

// gatewayBin is the gateway built from this tree for these tests.
var gatewayBin string

// TestMain builds the gateway once (with the race detector when this test
// binary has it) and runs the tests.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m, raceEnabled, &gatewayBin)) }

// environWithoutOTel is this process's environment less every OTEL_*
// variable, so that a gateway sees only the ones a test gives it.
func environWithoutOTel() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			out = append(out, kv)
		}
	}
	return out
}

// etcdThrough is a client/v3 client of the gateway's etcd front presenting
// the PKI's SVID of who.
func etcdThrough(t *testing.T, p *testenv.PKI, g *testenv.Gateway, who string) *clientv3.Client {
	t.Helper()
	tc, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: p.Cert(who), Key: p.Key(who), CA: p.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, "https://"+g.Etcd, tc)
}

func newClient(t *testing.T, endpoint string, tc *tls.Config) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 10 * time.Second,
		Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// putGet writes key through c and reads it back.
func putGet(t *testing.T, c *clientv3.Client, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, key, value); err != nil {
		t.Fatalf("put %s through the gateway: %v", key, err)
	}
	resp, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s through the gateway: %v", key, err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value {
		t.Fatalf("get %s = %v, want %q", key, resp.Kvs, value)
	}
}
