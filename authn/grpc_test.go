package authn_test

import (
	"context"
	"log/slog"
	"net"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/storegate/storegate/authn"
	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
)

// TestIdentifyGRPC serves gRPC with mtls.ServerConfig and dials it the way
// an etcd client does (ordinary TLS, host name from the endpoint), then
// identifies the caller in an interceptor as a front would.
func TestIdentifyGRPC(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	gw := ca.SVID(t, "gateway", "/gateway")
	web := ca.SVID(t, "web", "/web")
	src, err := mtls.NewFileSource(t.Context(), mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	a := authn.New([]spiffeid.TrustDomain{exampleOrg})
	identities := make(chan gate.Identity, 1)
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(mtls.ServerConfig(src, []spiffeid.TrustDomain{exampleOrg}, nil))),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			p, _ := peer.FromContext(ctx)
			info, _ := p.AuthInfo.(credentials.TLSInfo)
			id, err := a.Identify(&info.State)
			if err != nil {
				return nil, err
			}
			identities <- id
			return h(gate.WithIdentity(ctx, id), req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()

	cfg, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: web.Cert, Key: web.Key, CA: ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("status %v", resp.Status)
	}
	if id := <-identities; id.String() != "spiffe://example.org/web" {
		t.Errorf("identity %s", id)
	}
}
