package etcd

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// withUnknownField returns m with an extra field 999 a newer client might
// send, which this gateway cannot examine.
func withUnknownField[M proto.Message](m M) M {
	raw := protowire.AppendTag(nil, 999, protowire.VarintType)
	raw = protowire.AppendVarint(raw, 1)
	m.ProtoReflect().SetUnknown(raw)
	return m
}

// TestUnknownFieldsRefused: requests with fields the gateway does not know,
// at the top or nested (a Txn's ops, a Watch create), never reach etcd.
func TestUnknownFieldsRefused(t *testing.T) {
	e := newEnv(t, envConfig{})
	kv := e.kv(t, "admin")
	const msg = "storegate: request has fields unknown to the gateway's etcd API v3.7; they cannot be authorized"

	_, err := kv.Put(testCtx(t), withUnknownField(&pb.PutRequest{Key: []byte("/app/u"), Value: []byte("x")}))
	wantStatus(t, err, codes.InvalidArgument, msg)
	if _, ok := e.value(t, "/app/u"); ok {
		t.Fatal("a put with an unknown field reached etcd")
	}
	txn := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{
		RequestPut: withUnknownField(&pb.PutRequest{Key: []byte("/app/u"), Value: []byte("x")})}}}}
	_, err = kv.Txn(testCtx(t), txn)
	wantStatus(t, err, codes.InvalidArgument, msg)

	w, err := pb.NewWatchClient(e.conn(t, "admin")).Watch(testCtx(t))
	mustOK(t, err)
	mustOK(t, w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
		CreateRequest: withUnknownField(&pb.WatchCreateRequest{Key: []byte("/app/")})}}))
	_, err = w.Recv()
	wantStatus(t, err, codes.InvalidArgument, msg)

	// Known fields only: fine.
	_, err = kv.Put(testCtx(t), &pb.PutRequest{Key: []byte("/app/u"), Value: []byte("x")})
	mustOK(t, err)
}
