package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/mtls/mtlstest"
)

// rawCodec sends and receives bytes as they are. It calls itself "proto"
// so that the server decodes with its protobuf codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)   { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error { *(v.(*[]byte)) = bytes.Clone(b); return nil }
func (rawCodec) Name() string                    { return "proto" }

// TestOversizedRequest: a request over Options.MaxRequestBytes is refused
// with ResourceExhausted before anything is forwarded, and the connection
// keeps serving.
func TestOversizedRequest(t *testing.T) {
	e := newEnv(t, envConfig{opts: Options{MaxRequestBytes: 128 << 10}})
	kv := e.kv(t, "admin")
	big := bytes.Repeat([]byte("x"), 200<<10)

	_, err := kv.Put(testCtx(t), &pb.PutRequest{Key: []byte("/app/big"), Value: big})
	wantStatus(t, err, codes.ResourceExhausted, "")
	_, err = kv.Txn(testCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{opPut("/app/big", string(big))}})
	wantStatus(t, err, codes.ResourceExhausted, "")
	if _, ok := e.value(t, "/app/big"); ok {
		t.Fatal("an oversized put reached etcd")
	}
	// A watch stream with an oversized message ends; others are not
	// affected.
	w := e.rawWatch(t, "admin")
	w.create(&pb.WatchCreateRequest{Key: big})
	_, err = w.s.Recv()
	wantStatus(t, err, codes.ResourceExhausted, "")

	_, err = kv.Put(testCtx(t), &pb.PutRequest{Key: []byte("/app/small"), Value: []byte("1")})
	mustOK(t, err)
	// client/v3 sees the same.
	cli := e.client(t, "admin")
	_, err = cli.Put(testCtx(t), "/app/big", string(big))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("client/v3 put: %v, want ResourceExhausted", err)
	}
	_, err = cli.Put(testCtx(t), "/app/small", "2")
	mustOK(t, err)
	waitNoFrontGoroutines(t, watchGoroutines...)
}

// TestMalformedRequest: bytes that are not the request message are an
// error, not a crash, and the server keeps serving.
func TestMalformedRequest(t *testing.T) {
	e := newEnv(t, envConfig{})
	conn := e.conn(t, "admin")
	garbage := map[string][]byte{
		"truncated length": {0x0a, 0x10, 'a'},
		"bad wire type":    {0x0f},
		"bad varint":       {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"field number 0":   {0x00, 0x01},
	}
	methods := []string{
		"/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/Txn",
		"/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Cluster/MemberList", "/v3lockpb.Lock/Lock",
	}
	for name, b := range garbage {
		for _, m := range methods {
			t.Run(name+" "+m, func(t *testing.T) {
				var reply []byte
				in := b
				err := conn.Invoke(testCtx(t), m, &in, &reply, grpc.ForceCodec(rawCodec{}))
				if err == nil {
					t.Fatalf("no error; reply %x", reply)
				}
				wantStatus(t, err, codes.Internal, "")
			})
		}
	}
	t.Run("watch stream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
			"/etcdserverpb.Watch/Watch", grpc.ForceCodec(rawCodec{}))
		mustOK(t, err)
		in := []byte{0x0a, 0x10, 'a'}
		mustOK(t, s.SendMsg(&in))
		var out []byte
		err = s.RecvMsg(&out)
		wantStatus(t, err, codes.Internal, "")
		waitNoFrontGoroutines(t, watchGoroutines...)
	})
	t.Run("lease keep-alive stream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
			"/etcdserverpb.Lease/LeaseKeepAlive", grpc.ForceCodec(rawCodec{}))
		mustOK(t, err)
		in := []byte{0x0f}
		mustOK(t, s.SendMsg(&in))
		var out []byte
		err = s.RecvMsg(&out)
		wantStatus(t, err, codes.Internal, "")
		waitNoFrontGoroutines(t, "(*leaseServer).LeaseKeepAlive")
	})
	// Still serving, on the same connection.
	_, err := pb.NewKVClient(conn).Put(testCtx(t), &pb.PutRequest{Key: []byte("/app/ok"), Value: []byte("1")})
	mustOK(t, err)
}

// TestUnknownMethod: methods and services the front does not know are
// Unimplemented, never passed through.
func TestUnknownMethod(t *testing.T) {
	e := newEnv(t, envConfig{})
	conn := e.conn(t, "admin")
	for _, m := range []string{
		"/etcdserverpb.KV/Nope",
		"/etcdserverpb.Nope/Range",
		"/etcdserverpb.Maintenance/Nope",
		"/grpc.health.v1.Health/Check",
		"/etcdserverpb.KV/range",
	} {
		t.Run(m, func(t *testing.T) {
			err := conn.Invoke(testCtx(t), m, &pb.RangeRequest{Key: []byte("/app/a")}, &pb.RangeResponse{})
			wantStatus(t, err, codes.Unimplemented, "")
		})
	}
	t.Run("stream", func(t *testing.T) {
		s, err := conn.NewStream(testCtx(t), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/etcdserverpb.Watch/Nope")
		mustOK(t, err)
		mustOK(t, s.SendMsg(&pb.WatchRequest{}))
		err = s.RecvMsg(&pb.WatchResponse{})
		wantStatus(t, err, codes.Unimplemented, "")
	})
}

// TestCallerCertificates: only callers with an X.509-SVID of a trusted
// trust domain, chaining to its bundle, reach the front; the others
// cannot connect and nothing reaches etcd.
func TestCallerCertificates(t *testing.T) {
	logs := &logRecorder{}
	e := newEnv(t, envConfig{log: slog.New(logs)})
	roots := x509.NewCertPool()
	bundle, err := os.ReadFile(e.ca.Bundle())
	mustOK(t, err)
	roots.AppendCertsFromPEM(bundle)
	withCert := func(f mtlstest.Files) credentials.TransportCredentials {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		mustOK(t, err)
		return credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	}
	other := mtlstest.NewCA(t, "other.org")
	rogue := mtlstest.NewCA(t, "example.org") // same name, another CA

	tests := []struct {
		name   string
		creds  credentials.TransportCredentials
		reason string // the refusal the front logs ("": none, the handshake fails before)
	}{
		{"no client certificate", credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}), "no certificate"},
		{"another trust domain", withCert(other.SVID(t, "other-web", "/admin")), "untrusted trust domain"},
		{"same trust domain name, another CA", withCert(rogue.SVID(t, "rogue-admin", "/admin")), "unknown authority"},
		{"expired SVID", withCert(e.ca.Expired(t, "/admin")), "expired"},
		{"no SPIFFE ID", withCert(e.ca.NoURISAN(t)), "no SPIFFE ID"},
		{"leaf with the CA flag", withCert(e.ca.LeafCATrue(t, "/admin")), "invalid SVID"},
		{"TLS 1.1", func() credentials.TransportCredentials {
			f := e.svid(t, "admin")
			pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
			mustOK(t, err)
			return credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair},
				MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		}(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := e.dial(t, tt.creds)
			_, err := pb.NewKVClient(conn).Put(testCtx(t), &pb.PutRequest{Key: []byte("/app/intruder"), Value: []byte("x")})
			if err == nil {
				t.Fatal("the put went through")
			}
			wantStatus(t, err, codes.Unavailable, "")
			if tt.reason != "" && !logs.has("mtls: refused client", "reason", tt.reason) {
				t.Fatalf("no refusal logged with reason %q", tt.reason)
			}
			if _, ok := e.value(t, "/app/intruder"); ok {
				t.Fatal("the put reached etcd")
			}
		})
	}
	t.Run("trusted caller", func(t *testing.T) {
		_, err := e.kv(t, "admin").Put(testCtx(t), &pb.PutRequest{Key: []byte("/app/ok"), Value: []byte("1")})
		mustOK(t, err)
	})
	t.Run("plaintext", func(t *testing.T) {
		conn := e.dial(t, insecure.NewCredentials())
		_, err := pb.NewKVClient(conn).Range(testCtx(t), rangeReq("/app/ok", ""))
		wantStatus(t, err, codes.Unavailable, "")
	})
}
