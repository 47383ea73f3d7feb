package e2e

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// heRaw sends and receives message bytes as they are; it calls itself
// "proto" so the server decodes them as usual.
type heRaw struct{}

func (heRaw) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (heRaw) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = bytes.Clone(b)
	return nil
}
func (heRaw) Name() string { return "proto" }

// heInvokeRaw calls method with body as the request's bytes.
func heInvokeRaw(t *testing.T, conn *grpc.ClientConn, method string, body []byte) ([]byte, error) {
	t.Helper()
	var reply []byte
	err := conn.Invoke(heCtx(t), method, &body, &reply, grpc.ForceCodec(heRaw{}))
	return reply, err
}

// heUnknown is an unknown field of each wire type.
var heUnknown = []struct {
	name string
	enc  func(b []byte, num protowire.Number) []byte
}{
	{"varint", func(b []byte, n protowire.Number) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, n, protowire.VarintType), 1)
	}},
	{"fixed32", func(b []byte, n protowire.Number) []byte {
		return protowire.AppendFixed32(protowire.AppendTag(b, n, protowire.Fixed32Type), 0xdeadbeef)
	}},
	{"fixed64", func(b []byte, n protowire.Number) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(b, n, protowire.Fixed64Type), 1)
	}},
	{"bytes", func(b []byte, n protowire.Number) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, n, protowire.BytesType), []byte("/app/secret/x\xff"))
	}},
	{"group", func(b []byte, n protowire.Number) []byte {
		b = protowire.AppendTag(b, n, protowire.StartGroupType)
		b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), 7)
		return protowire.AppendTag(b, n, protowire.EndGroupType)
	}},
}

// heUnknownNums are field numbers none of etcd's v3.7 request messages
// define: far past the known ones, and the largest valid. (PutRequest's
// next number, 7, is tried on its own.)
var heUnknownNums = []protowire.Number{99, 1000, 19999, protowire.MaxValidNumber}

func heWithUnknown[M proto.Message](m M, raw []byte) M {
	m.ProtoReflect().SetUnknown(raw)
	return m
}

func heBytesField(b []byte, n protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, n, protowire.BytesType), v)
}

// TestHostileEtcdParser: class 6, parser differentials. Requests carrying
// fields the gateway's etcd API does not know, at the top or nested inside
// txn ops, watch creates, locks and elections, are refused with
// InvalidArgument and never reach etcd; duplicate fields and oneofs are read
// by the gateway exactly as etcd reads them.
func TestHostileEtcdParser(t *testing.T) {
	e := newHeEnv(t, "")
	for k, v := range heSeed {
		e.put(t, k, v)
	}
	e.put(t, "/app/u/del", "keep")
	refused := func(t *testing.T, what string, err error, rev0 int64, absent ...string) {
		t.Helper()
		heCode(t, what, err, codes.InvalidArgument)
		if rev := e.rev(t); rev != rev0 {
			t.Errorf("%s: etcd's revision moved %d -> %d", what, rev0, rev)
		}
		for _, k := range absent {
			if e.get(t, k) != nil {
				t.Errorf("%s: %q is in etcd", what, k)
				if _, err := e.direct.Delete(heCtx(t), k); err != nil { // so the next attack starts clean
					t.Fatal(err)
				}
			}
		}
	}

	t.Run("top level", func(t *testing.T) {
		for _, u := range heUnknown {
			for _, n := range append([]protowire.Number{7}, heUnknownNums...) {
				what := fmt.Sprintf("%s field %d", u.name, n)
				for _, c := range []struct {
					who  string
					conn *grpc.ClientConn
				}{{"web", e.web}, {"admin", e.admin}} {
					rev0 := e.rev(t)
					put, _ := proto.Marshal(&pb.PutRequest{Key: []byte("/app/u/1"), Value: []byte("x")})
					_, err := heInvokeRaw(t, c.conn, "/etcdserverpb.KV/Put", u.enc(put, n))
					refused(t, c.who+" Put with "+what, err, rev0, "/app/u/1")
					// Unknown fields before the known ones, too.
					_, err = heInvokeRaw(t, c.conn, "/etcdserverpb.KV/Put", append(u.enc(nil, n), put...))
					refused(t, c.who+" Put led by "+what, err, rev0, "/app/u/1")
					if n == 7 {
						continue // known to the other messages
					}
					del, _ := proto.Marshal(&pb.DeleteRangeRequest{Key: []byte("/app/u/del")})
					_, err = heInvokeRaw(t, c.conn, "/etcdserverpb.KV/DeleteRange", u.enc(del, n))
					refused(t, c.who+" DeleteRange with "+what, err, rev0)
					rng, _ := proto.Marshal(&pb.RangeRequest{Key: []byte("/app/a")})
					_, err = heInvokeRaw(t, c.conn, "/etcdserverpb.KV/Range", u.enc(rng, n))
					refused(t, c.who+" Range with "+what, err, rev0)
				}
			}
		}
		if e.get(t, "/app/u/del") == nil {
			t.Error("/app/u/del deleted by a refused request")
		}
	})

	t.Run("inside txn ops", func(t *testing.T) {
		for _, u := range heUnknown {
			for _, n := range []protowire.Number{99, protowire.MaxValidNumber} {
				raw := u.enc(nil, n)
				where := map[string]*pb.TxnRequest{
					"put":        {Success: []*pb.RequestOp{heOpPut("/app/u/ok", "x", 0), {Request: &pb.RequestOp_RequestPut{RequestPut: heWithUnknown(&pb.PutRequest{Key: []byte("/app/u/2"), Value: []byte("x")}, raw)}}}},
					"request op": {Success: []*pb.RequestOp{heOpPut("/app/u/ok", "x", 0), heWithUnknown(heOpPut("/app/u/2", "x", 0), raw)}},
					"delete in failure": {Compare: []*pb.Compare{{Key: []byte("/app/a"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 0}}},
						Success: []*pb.RequestOp{heOpPut("/app/u/ok", "x", 0)},
						Failure: []*pb.RequestOp{heOpPut("/app/u/ok", "x", 0), {Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: heWithUnknown(&pb.DeleteRangeRequest{Key: []byte("/app/u/del")}, raw)}}}},
					"range": {Success: []*pb.RequestOp{heOpPut("/app/u/ok", "x", 0), {Request: &pb.RequestOp_RequestRange{RequestRange: heWithUnknown(&pb.RangeRequest{Key: []byte("/app/a")}, raw)}}}},
					"compare": {Compare: []*pb.Compare{heWithUnknown(&pb.Compare{Key: []byte("/app/a"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}, raw)},
						Success: []*pb.RequestOp{heOpPut("/app/u/ok", "x", 0)}},
					"nested txn, depth 4": heNest(4, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: heWithUnknown(&pb.PutRequest{Key: []byte("/app/u/ok"), Value: []byte("x")}, raw)}}, false),
					"nested txn itself":   {Success: []*pb.RequestOp{heOpPut("/app/u/ok", "x", 0), heOpTxn(heWithUnknown(&pb.TxnRequest{Success: []*pb.RequestOp{heOpPut("/app/u/2", "x", 0)}}, raw))}},
					"top-level txn":       heWithUnknown(&pb.TxnRequest{Success: []*pb.RequestOp{heOpPut("/app/u/ok", "x", 0)}}, raw),
				}
				for name, txn := range where {
					for _, c := range []struct {
						who  string
						conn *grpc.ClientConn
					}{{"web", e.web}, {"admin", e.admin}} {
						rev0 := e.rev(t)
						_, err := pb.NewKVClient(c.conn).Txn(heCtx(t), txn)
						refused(t, fmt.Sprintf("%s txn, %s field %d in the %s", c.who, u.name, n, name), err, rev0, "/app/u/ok", "/app/u/2", "/app/n/ok1")
					}
				}
			}
		}
	})

	t.Run("streams and other services", func(t *testing.T) {
		raw := heUnknown[0].enc(nil, 99)
		webLease := heGrant(t, e.web, 60)
		leases0, err := e.direct.Leases(heCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		rev0 := e.rev(t)
		_, err = pb.NewLeaseClient(e.admin).LeaseGrant(heCtx(t), heWithUnknown(&pb.LeaseGrantRequest{TTL: 60}, raw))
		heCode(t, "LeaseGrant with an unknown field", err, codes.InvalidArgument)
		_, err = pb.NewLeaseClient(e.web).LeaseRevoke(heCtx(t), heWithUnknown(&pb.LeaseRevokeRequest{ID: webLease}, raw))
		heCode(t, "LeaseRevoke with an unknown field", err, codes.InvalidArgument)
		if leases, err := e.direct.Leases(heCtx(t)); err != nil || len(leases.Leases) != len(leases0.Leases) {
			t.Errorf("leases in etcd changed: %d -> %d (%v)", len(leases0.Leases), len(leases.Leases), err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = v3lockpb.NewLockClient(e.web).Lock(ctx, heWithUnknown(&v3lockpb.LockRequest{Name: []byte("/app/locks/u"), Lease: webLease}, raw))
		cancel()
		heCode(t, "Lock with an unknown field", err, codes.InvalidArgument)
		ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
		_, err = v3electionpb.NewElectionClient(e.web).Campaign(ctx, heWithUnknown(&v3electionpb.CampaignRequest{Name: []byte("/app/election/u"), Lease: webLease, Value: []byte("v")}, raw))
		cancel()
		heCode(t, "Campaign with an unknown field", err, codes.InvalidArgument)
		if rev := e.rev(t); rev != rev0 {
			t.Errorf("etcd's revision moved %d -> %d", rev0, rev)
		}

		// A watch create carrying one: the stream is refused, no watch made.
		for i, req := range []*pb.WatchRequest{
			{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: heWithUnknown(&pb.WatchCreateRequest{Key: []byte("/app/a")}, raw)}},
			heWithUnknown(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("/app/a")}}}, raw),
			heWithUnknown(&pb.WatchRequest{}, raw),
		} {
			w := heOpenWatch(t, e.web)
			if err := w.s.Send(req); err != nil {
				t.Fatal(err)
			}
			select {
			case r, ok := <-w.resp:
				if ok && r.Created && !r.Canceled {
					t.Errorf("watch %d with an unknown field was created", i)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("watch %d with an unknown field: no answer", i)
			}
			select {
			case err := <-w.err:
				heCode(t, fmt.Sprintf("watch %d with an unknown field", i), err, codes.InvalidArgument)
			case <-time.After(10 * time.Second):
				t.Errorf("watch %d: stream still open", i)
			}
		}
		// A keep-alive carrying one.
		ka, err := pb.NewLeaseClient(e.web).LeaseKeepAlive(heCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := ka.Send(heWithUnknown(&pb.LeaseKeepAliveRequest{ID: webLease}, raw)); err != nil {
			t.Fatal(err)
		}
		r, err := ka.Recv()
		if err == nil {
			t.Errorf("keep-alive with an unknown field answered %v", r)
		}
		heCode(t, "keep-alive with an unknown field", err, codes.InvalidArgument)
	})

	t.Run("duplicate fields and oneofs", func(t *testing.T) {
		// Put with its key twice: the last one counts, for etcd and gateway.
		rev0 := e.rev(t)
		body := heBytesField(heBytesField(heBytesField(nil, 1, []byte("/app/u/dup")), 1, []byte("/app/secret/dup")), 2, []byte("v"))
		_, err := heInvokeRaw(t, e.web, "/etcdserverpb.KV/Put", body)
		heDenied(t, "Put key /app/u/dup then /app/secret/dup", err)
		if e.rev(t) != rev0 || e.get(t, "/app/u/dup") != nil || e.get(t, "/app/secret/dup") != nil {
			t.Error("a refused duplicate-key Put wrote to etcd")
		}
		body = heBytesField(heBytesField(heBytesField(nil, 1, []byte("/app/secret/dup")), 1, []byte("/app/u/dup")), 2, []byte("v"))
		if _, err := heInvokeRaw(t, e.web, "/etcdserverpb.KV/Put", body); err != nil {
			t.Errorf("Put key /app/secret/dup then /app/u/dup: %v", err)
		}
		if e.get(t, "/app/secret/dup") != nil {
			t.Error("/app/secret/dup written: the gateway judged a key etcd did not act on")
		}
		if got := e.get(t, "/app/u/dup"); got == nil || string(got.Value) != "v" {
			t.Errorf("/app/u/dup in etcd: %v", got)
		}

		// Txn ops: a RequestOp with two oneof members (the last wins), or one
		// member twice (merged).
		put := func(k string) []byte {
			b, _ := proto.Marshal(&pb.PutRequest{Key: []byte(k), Value: []byte("v")})
			return b
		}
		rng := func(k string) []byte { b, _ := proto.Marshal(&pb.RangeRequest{Key: []byte(k)}); return b }
		valueOnly, _ := proto.Marshal(&pb.PutRequest{Value: []byte("merged")})
		ops := []struct {
			name    string
			op      []byte
			allowed bool
		}{
			{"range then put secret", heBytesField(heBytesField(nil, 1, rng("/app/a")), 2, put("/app/secret/oneof")), false},
			{"put secret then range", heBytesField(heBytesField(nil, 2, put("/app/secret/oneof")), 1, rng("/app/a")), true},
			{"put secret key, then value (merged)", heBytesField(heBytesField(nil, 2, put("/app/secret/merge")), 2, valueOnly), false},
			{"put allowed, then put secret (merged)", heBytesField(heBytesField(nil, 2, put("/app/u/m")), 2, put("/app/secret/merge")), false},
			{"put secret, then put allowed (merged)", heBytesField(heBytesField(nil, 2, put("/app/secret/merge")), 2, put("/app/u/m")), true},
			{"delete secret, then range", heBytesField(heBytesField(nil, 3, func() []byte {
				b, _ := proto.Marshal(&pb.DeleteRangeRequest{Key: []byte("/app/secret/token")})
				return b
			}()), 1, rng("/app/a")), true},
		}
		for _, o := range ops {
			rev0 := e.rev(t)
			body := heBytesField(nil, 2, o.op) // TxnRequest.success
			_, err := heInvokeRaw(t, e.web, "/etcdserverpb.KV/Txn", body)
			if o.allowed {
				if err != nil {
					t.Errorf("txn %s: %v", o.name, err)
				}
			} else {
				heDenied(t, "txn "+o.name, err)
				if e.rev(t) != rev0 {
					t.Errorf("txn %s: etcd's revision moved", o.name)
				}
			}
			for _, k := range []string{"/app/secret/oneof", "/app/secret/merge"} {
				if e.get(t, k) != nil {
					t.Errorf("txn %s: %q written in etcd", o.name, k)
				}
			}
			if e.get(t, "/app/secret/token") == nil {
				t.Errorf("txn %s: /app/secret/token deleted", o.name)
			}
		}

		// Malformed bodies are refused before anything happens.
		rev0 = e.rev(t)
		good := put("/app/u/bad")
		for name, body := range map[string][]byte{
			"truncated varint tag":      append(bytes.Clone(good), 0x80),
			"length past the end":       append(bytes.Clone(good), 0x0a, 0x7f, 'x'),
			"field number 0":            append(protowire.AppendVarint(nil, 0<<3|0), good...),
			"key as a varint":           append(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5), good...),
			"group never ended":         protowire.AppendTag(bytes.Clone(good), 9, protowire.StartGroupType),
			"stray end group":           protowire.AppendTag(bytes.Clone(good), 9, protowire.EndGroupType),
			"huge length prefix":        append(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.BytesType), 1<<40), 'x'),
			"invalid utf8 unknown name": heBytesField(bytes.Clone(good), 77, []byte("\xff\xfe\x00")),
		} {
			_, err := heInvokeRaw(t, e.admin, "/etcdserverpb.KV/Put", body)
			if err == nil {
				t.Errorf("Put, %s: accepted", name)
			}
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.Internal {
				t.Errorf("Put, %s: %v, want InvalidArgument (or gRPC's Internal for undecodable bytes)", name, err)
			}
		}
		if e.rev(t) != rev0 || e.get(t, "/app/u/bad") != nil {
			t.Error("a malformed Put reached etcd")
		}
	})
}
