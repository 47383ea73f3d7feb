package etcd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
)

// Request builders for raw KV calls.

func rangeReq(key, end string) *pb.RangeRequest {
	return &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)}
}

func prefixReq(prefix string) *pb.RangeRequest {
	return &pb.RangeRequest{Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix))}
}

func opPut(key, val string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(val)}}}
}

func opPutReq(r *pb.PutRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: r}}
}

func opRange(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func opDel(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func opTxn(r *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r}}
}

// cmpExists is a compare that holds when key exists.
func cmpExists(key string) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}
}

func puts(prefix string, n int) []*pb.RequestOp {
	ops := make([]*pb.RequestOp, n)
	for i := range ops {
		ops[i] = opPut(prefix+string(rune('a'+i)), "v")
	}
	return ops
}

// TestKVAuthorization: each KV method, allowed or denied, with etcd's own
// error text and no side effect on denial.
func TestKVAuthorization(t *testing.T) {
	e := newEnv(t, envConfig{opts: Options{MaxTxnOps: 8}})
	e.put(t, "/app/a", "1")
	e.put(t, "/app/secret/x", "s")
	e.put(t, "/app/del", "d")
	e.put(t, "/other", "o")
	e.put(t, "/w/a", "w")

	type call func(ctx context.Context, kv pb.KVClient) error
	rng := func(r *pb.RangeRequest) call {
		return func(ctx context.Context, kv pb.KVClient) error { _, err := kv.Range(ctx, r); return err }
	}
	put := func(r *pb.PutRequest) call {
		return func(ctx context.Context, kv pb.KVClient) error { _, err := kv.Put(ctx, r); return err }
	}
	del := func(r *pb.DeleteRangeRequest) call {
		return func(ctx context.Context, kv pb.KVClient) error { _, err := kv.DeleteRange(ctx, r); return err }
	}
	txn := func(r *pb.TxnRequest) call {
		return func(ctx context.Context, kv pb.KVClient) error { _, err := kv.Txn(ctx, r); return err }
	}
	compact := func(ctx context.Context, kv pb.KVClient) error {
		_, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 1})
		return err
	}
	has := func(key, val string) func(t *testing.T) {
		return func(t *testing.T) {
			t.Helper()
			if got, ok := e.value(t, key); !ok || got != val {
				t.Fatalf("%s = %q (exists %v), want %q", key, got, ok, val)
			}
		}
	}
	absent := func(key string) func(t *testing.T) {
		return func(t *testing.T) {
			t.Helper()
			if got, ok := e.value(t, key); ok {
				t.Fatalf("%s exists with %q, want it absent", key, got)
			}
		}
	}
	const emptyKey = "etcdserver: key is not provided"

	tests := []struct {
		name  string
		who   string
		do    call
		code  codes.Code // codes.OK: allowed
		msg   string     // exact message when code is not OK (default: permission denied)
		check func(t *testing.T)
	}{
		{name: "range allowed key", who: "web", do: rng(rangeReq("/app/a", ""))},
		{name: "range denied key", who: "web", do: rng(rangeReq("/app/secret/x", "")), code: codes.PermissionDenied},
		{name: "range key outside", who: "web", do: rng(rangeReq("/other", "")), code: codes.PermissionDenied},
		{name: "range by reader", who: "reader", do: rng(rangeReq("/app/a", ""))},
		{name: "range by nobody", who: "nobody", do: rng(rangeReq("/app/a", "")), code: codes.PermissionDenied},
		{name: "range whole keyspace by nobody", who: "nobody", do: rng(rangeReq("\x00", "\x00")), code: codes.PermissionDenied},
		{name: "range by a writer without read", who: "writer", do: rng(rangeReq("/w/a", "")), code: codes.PermissionDenied},

		{name: "put allowed", who: "web", do: put(&pb.PutRequest{Key: []byte("/app/a"), Value: []byte("2")}), check: has("/app/a", "2")},
		{name: "put denied key", who: "web", do: put(&pb.PutRequest{Key: []byte("/app/secret/x"), Value: []byte("pwned")}),
			code: codes.PermissionDenied, check: has("/app/secret/x", "s")},
		{name: "put outside", who: "web", do: put(&pb.PutRequest{Key: []byte("/other"), Value: []byte("pwned")}),
			code: codes.PermissionDenied, check: has("/other", "o")},
		{name: "put by reader", who: "reader", do: put(&pb.PutRequest{Key: []byte("/app/a"), Value: []byte("r")}),
			code: codes.PermissionDenied, check: has("/app/a", "2")},
		{name: "put by writer", who: "writer", do: put(&pb.PutRequest{Key: []byte("/w/a"), Value: []byte("w2")}), check: has("/w/a", "w2")},
		{name: "put with prev_kv needs read", who: "writer", do: put(&pb.PutRequest{Key: []byte("/w/a"), Value: []byte("w3"), PrevKv: true}),
			code: codes.PermissionDenied, check: has("/w/a", "w2")},
		{name: "put with prev_kv and read", who: "web", do: put(&pb.PutRequest{Key: []byte("/app/a"), Value: []byte("3"), PrevKv: true}),
			check: has("/app/a", "3")},

		{name: "delete allowed", who: "web", do: del(&pb.DeleteRangeRequest{Key: []byte("/app/del")}), check: absent("/app/del")},
		{name: "delete denied key", who: "web", do: del(&pb.DeleteRangeRequest{Key: []byte("/app/secret/x")}),
			code: codes.PermissionDenied, check: has("/app/secret/x", "s")},
		{name: "delete of a partly denied range", who: "web", do: del(&pb.DeleteRangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0")}),
			code: codes.PermissionDenied, check: func(t *testing.T) { has("/app/a", "3")(t); has("/app/secret/x", "s")(t) }},
		{name: "delete of a partly denied range with prev_kv", who: "web",
			do:   del(&pb.DeleteRangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), PrevKv: true}),
			code: codes.PermissionDenied, check: func(t *testing.T) { has("/app/a", "3")(t); has("/app/secret/x", "s")(t) }},
		{name: "delete by reader", who: "reader", do: del(&pb.DeleteRangeRequest{Key: []byte("/app/a")}),
			code: codes.PermissionDenied, check: has("/app/a", "3")},

		{name: "txn allowed", who: "web", do: txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("/app/t", "t")}}), check: has("/app/t", "t")},
		{name: "txn by nobody", who: "nobody", do: txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("/app/n", "n")}}),
			code: codes.PermissionDenied, check: absent("/app/n")},

		{name: "compact by web", who: "web", do: compact, code: codes.PermissionDenied},
		{name: "compact by admin", who: "admin", do: compact},

		{name: "range empty key", who: "web", do: rng(rangeReq("", "")), code: codes.InvalidArgument, msg: emptyKey},
		{name: "range empty key by admin", who: "admin", do: rng(rangeReq("", "")), code: codes.InvalidArgument, msg: emptyKey},
		{name: "put empty key", who: "admin", do: put(&pb.PutRequest{Value: []byte("x")}), code: codes.InvalidArgument, msg: emptyKey},
		{name: "delete empty key", who: "admin", do: del(&pb.DeleteRangeRequest{}), code: codes.InvalidArgument, msg: emptyKey},
	}
	clients := map[string]pb.KVClient{}
	for _, tt := range tests {
		if clients[tt.who] == nil {
			clients[tt.who] = e.kv(t, tt.who)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := clients[tt.who]
			err := tt.do(testCtx(t), kv)
			switch {
			case tt.code == codes.OK:
				mustOK(t, err)
			case tt.code == codes.PermissionDenied && tt.msg == "":
				wantDenied(t, err)
			default:
				wantStatus(t, err, tt.code, tt.msg)
			}
			if tt.check != nil {
				tt.check(t)
			}
		})
	}
}

// TestKVClientDenied: client/v3 sees etcd's own error value.
func TestKVClientDenied(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.put(t, "/app/secret/x", "s")
	web := e.client(t, "web")
	ctx := testCtx(t)
	_, err := web.Get(ctx, "/app/secret/x")
	wantClientDenied(t, err)
	_, err = web.Put(ctx, "/app/secret/x", "pwned")
	wantClientDenied(t, err)
	_, err = web.Delete(ctx, "/app/secret/x")
	wantClientDenied(t, err)
	if v, _ := e.value(t, "/app/secret/x"); v != "s" {
		t.Fatalf("/app/secret/x = %q after denied writes", v)
	}
	if _, err := web.Put(ctx, "/app/ok", "1"); err != nil {
		t.Fatal(err)
	}
	r, err := web.Get(ctx, "/app/ok")
	mustOK(t, err)
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "1" {
		t.Fatalf("get /app/ok: %v", r.Kvs)
	}
}

// TestKVTxn: a transaction is authorized as a whole, every compare and
// every op of both branches and of nested transactions included; one
// forbidden op denies it and nothing is written.
func TestKVTxn(t *testing.T) {
	e := newEnv(t, envConfig{opts: Options{MaxTxnOps: 8}})
	e.put(t, "/app/a", "v")
	e.put(t, "/app/secret/x", "v")
	e.put(t, "/other", "o")
	web := e.kv(t, "web")
	const tooMany = "etcdserver: too many operations in txn request"

	tests := []struct {
		name    string
		who     string
		req     *pb.TxnRequest
		code    codes.Code
		msg     string
		written []string // keys under /app/t/ that must exist afterwards (all others absent)
	}{
		{
			name: "allowed, nested",
			req: &pb.TxnRequest{
				Compare: []*pb.Compare{cmpExists("/app/a")},
				Success: []*pb.RequestOp{opPut("/app/t/1", "1"), opTxn(&pb.TxnRequest{
					Compare: []*pb.Compare{cmpExists("/app/a")},
					Success: []*pb.RequestOp{opPut("/app/t/2", "2"), opRange(rangeReq("/app/a", ""))},
				})},
				Failure: []*pb.RequestOp{opPut("/app/t/f", "f")},
			},
			written: []string{"/app/t/1", "/app/t/2"},
		},
		{
			name: "compare on a forbidden key",
			req: &pb.TxnRequest{
				Compare: []*pb.Compare{cmpExists("/app/secret/x")},
				Success: []*pb.RequestOp{opPut("/app/t/c", "c")},
			},
			code: codes.PermissionDenied,
		},
		{
			name: "compare on a key outside",
			req: &pb.TxnRequest{
				Compare: []*pb.Compare{cmpExists("/app/a"), cmpExists("/other")},
				Success: []*pb.RequestOp{opPut("/app/t/c", "c")},
			},
			code: codes.PermissionDenied,
		},
		{
			name: "forbidden put in a nested txn",
			req: &pb.TxnRequest{
				Success: []*pb.RequestOp{opPut("/app/t/n1", "1"), opTxn(&pb.TxnRequest{
					Success: []*pb.RequestOp{opPut("/app/t/n2", "2"), opPut("/app/secret/n", "pwned")},
				})},
			},
			code: codes.PermissionDenied,
		},
		{
			name: "forbidden compare in a nested txn",
			req: &pb.TxnRequest{
				Success: []*pb.RequestOp{opPut("/app/t/n1", "1"), opTxn(&pb.TxnRequest{
					Compare: []*pb.Compare{cmpExists("/app/secret/x")},
					Success: []*pb.RequestOp{opPut("/app/t/n2", "2")},
				})},
			},
			code: codes.PermissionDenied,
		},
		{
			name: "forbidden op in the failure branch of a nested txn",
			req: &pb.TxnRequest{
				Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{
					Success: []*pb.RequestOp{opPut("/app/t/n2", "2")},
					Failure: []*pb.RequestOp{opRange(rangeReq("/app/secret/x", ""))},
				})},
			},
			code: codes.PermissionDenied,
		},
		{
			name: "forbidden delete in the failure branch that does not run",
			req: &pb.TxnRequest{
				Compare: []*pb.Compare{cmpExists("/app/a")},
				Success: []*pb.RequestOp{opPut("/app/t/s", "s")},
				Failure: []*pb.RequestOp{opDel("/other", "")},
			},
			code: codes.PermissionDenied,
		},
		{
			name: "forbidden read in the failure branch",
			req: &pb.TxnRequest{
				Success: []*pb.RequestOp{opPut("/app/t/s", "s")},
				Failure: []*pb.RequestOp{opRange(rangeReq("/app/secret/x", ""))},
			},
			code: codes.PermissionDenied,
		},
		{
			name: "delete of a partly denied range",
			req:  &pb.TxnRequest{Success: []*pb.RequestOp{opPut("/app/t/s", "s"), opDel("/app/", "/app0")}},
			code: codes.PermissionDenied,
		},
		{
			name: "put with prev_kv by a caller that may not read",
			who:  "writer",
			req:  &pb.TxnRequest{Success: []*pb.RequestOp{opPutReq(&pb.PutRequest{Key: []byte("/w/t"), Value: []byte("x"), PrevKv: true})}},
			code: codes.PermissionDenied,
		},
		{
			// A compare over a range the caller may read only in part is a
			// read of every key of the range: with a value compare it tells
			// whether the hidden keys hold a guessed value. It must be
			// denied, not filtered.
			name: "compare over a partly readable range",
			req: &pb.TxnRequest{
				Compare: []*pb.Compare{{
					Key: []byte("/app/"), RangeEnd: []byte("/app0"),
					Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("v")},
				}},
				Success: []*pb.RequestOp{opPut("/app/t/probe", "secrets hold v")},
				Failure: []*pb.RequestOp{opPut("/app/t/probe", "secrets differ")},
			},
			code: codes.PermissionDenied,
		},
		{
			name:    "exactly MaxTxnOps ops",
			req:     &pb.TxnRequest{Success: puts("/app/t/", 8)},
			written: []string{"/app/t/a", "/app/t/b", "/app/t/c", "/app/t/d", "/app/t/e", "/app/t/f", "/app/t/g", "/app/t/h"},
		},
		{
			name: "more than MaxTxnOps ops",
			req:  &pb.TxnRequest{Success: puts("/app/t/", 9)},
			code: codes.InvalidArgument, msg: tooMany,
		},
		{
			name: "more than MaxTxnOps across both branches",
			req:  &pb.TxnRequest{Success: puts("/app/t/", 5), Failure: puts("/app/t/f", 5)},
			code: codes.InvalidArgument, msg: tooMany,
		},
		{
			name: "more than MaxTxnOps with nested txns",
			req:  &pb.TxnRequest{Success: append(puts("/app/t/", 5), opTxn(&pb.TxnRequest{Success: puts("/app/t/n", 5)}))},
			code: codes.InvalidArgument, msg: tooMany,
		},
		{
			name: "more than MaxTxnOps by admin",
			who:  "admin",
			req:  &pb.TxnRequest{Success: puts("/app/t/", 9)},
			code: codes.InvalidArgument, msg: tooMany,
		},
		{
			name: "empty request op",
			req:  &pb.TxnRequest{Success: []*pb.RequestOp{opPut("/app/t/e", "e"), {}}},
			code: codes.InvalidArgument, msg: "storegate: txn request op is empty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			if _, err := e.direct.Delete(ctx, "/app/t/", clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			kv := web
			if tt.who != "" {
				kv = e.kv(t, tt.who)
			}
			before, err := e.direct.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			mustOK(t, err)
			_, err = kv.Txn(ctx, tt.req)
			switch {
			case tt.code == codes.OK:
				mustOK(t, err)
			case tt.code == codes.PermissionDenied:
				wantDenied(t, err)
			default:
				wantStatus(t, err, tt.code, tt.msg)
			}
			want := tt.written
			if want == nil {
				want = []string{}
			}
			wantKeys(t, "keys under /app/t/", e.keys(t, "/app/t/"), want)
			if tt.code != codes.OK {
				after, err := e.direct.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
				mustOK(t, err)
				if after.Header.Revision != before.Header.Revision {
					t.Fatalf("a denied txn changed the store: revision %d -> %d", before.Header.Revision, after.Header.Revision)
				}
			}
			if v, _ := e.value(t, "/app/secret/x"); v != "v" {
				t.Fatalf("/app/secret/x = %q", v)
			}
			if v, _ := e.value(t, "/other"); v != "o" {
				t.Fatalf("/other = %q", v)
			}
		})
	}
}

// TestKVPutLease: attaching a key to a lease needs write access to every
// key already on that lease (etcd's own rule).
func TestKVPutLease(t *testing.T) {
	e := newEnv(t, envConfig{})
	// The leases are web's; the admin (whose intention covers every
	// owner's leases) attaches keys to them through the gateway.
	admin := e.client(t, "admin")
	grant := func() clientv3.LeaseID { return e.grant(t, 600) }
	forbidden := grant()
	_, err := admin.Put(testCtx(t), "/app/secret/leased", "s", clientv3.WithLease(forbidden))
	mustOK(t, err)
	mine := grant()
	_, err = admin.Put(testCtx(t), "/app/leased", "1", clientv3.WithLease(mine))
	mustOK(t, err)
	empty := grant()

	kv := e.kv(t, "web")
	tests := []struct {
		name   string
		do     func(ctx context.Context) error
		denied bool
		key    string // must exist afterwards iff !denied
	}{
		{name: "lease holding a forbidden key", denied: true, key: "/app/l1", do: func(ctx context.Context) error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/app/l1"), Value: []byte("x"), Lease: int64(forbidden)})
			return err
		}},
		{name: "lease holding a forbidden key, in a txn", denied: true, key: "/app/l2", do: func(ctx context.Context) error {
			_, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{
				opPutReq(&pb.PutRequest{Key: []byte("/app/l2"), Value: []byte("x"), Lease: int64(forbidden)}),
			}})
			return err
		}},
		{name: "lease holding writable keys", key: "/app/l3", do: func(ctx context.Context) error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/app/l3"), Value: []byte("x"), Lease: int64(mine)})
			return err
		}},
		{name: "lease holding no key", key: "/app/l4", do: func(ctx context.Context) error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/app/l4"), Value: []byte("x"), Lease: int64(empty)})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do(testCtx(t))
			if tt.denied {
				wantDenied(t, err)
			} else {
				mustOK(t, err)
			}
			if _, ok := e.value(t, tt.key); ok == tt.denied {
				t.Fatalf("%s exists: %v, want %v", tt.key, ok, !tt.denied)
			}
		})
	}
	// The forbidden lease still holds only its own key (and the gateway's
	// record of its owner).
	ttl, err := e.direct.TimeToLive(testCtx(t), forbidden, clientv3.WithAttachedKeys())
	mustOK(t, err)
	ttl.Keys = slices.DeleteFunc(ttl.Keys, func(k []byte) bool { return bytes.HasPrefix(k, []byte(ReservedPrefix)) })
	if len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "/app/secret/leased" {
		t.Fatalf("forbidden lease keys: %q", ttl.Keys)
	}
}

// TestKVFilteredRange: a caller allowed /app/** but denied /app/secret/**
// reading /app/ gets only what it may read; counts, limits and "more" never
// reveal the hidden keys.
func TestKVFilteredRange(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.put(t, "/app/a", "1")
	e.put(t, "/app/b", "2")
	e.put(t, "/app/secret/x", "s1")
	e.put(t, "/app/secret/y", "s2")
	e.put(t, "/other", "o")
	web := e.kv(t, "web")
	visible := []string{"/app/a", "/app/b"}

	withReq := func(f func(r *pb.RangeRequest)) *pb.RangeRequest {
		r := prefixReq("/app/")
		f(r)
		return r
	}
	type rangeCase struct {
		name   string
		req    *pb.RangeRequest
		keys   []string
		count  int64
		more   bool
		values bool // values must be present
	}
	tests := []rangeCase{
		{name: "prefix", req: prefixReq("/app/"), keys: visible, count: 2, values: true},
		{name: "limit 1", req: withReq(func(r *pb.RangeRequest) { r.Limit = 1 }), keys: []string{"/app/a"}, count: 2, more: true, values: true},
		{name: "limit 2", req: withReq(func(r *pb.RangeRequest) { r.Limit = 2 }), keys: visible, count: 2, values: true},
		{name: "limit 1 hidden keys first", req: withReq(func(r *pb.RangeRequest) {
			r.Limit, r.SortOrder, r.SortTarget = 1, pb.RangeRequest_DESCEND, pb.RangeRequest_KEY
		}), keys: []string{"/app/b"}, count: 2, more: true, values: true},
		{name: "count only", req: withReq(func(r *pb.RangeRequest) { r.CountOnly = true }), keys: []string{}, count: 2},
		{name: "count only with limit", req: withReq(func(r *pb.RangeRequest) { r.CountOnly, r.Limit = true, 1 }), keys: []string{}, count: 2},
		{name: "keys only", req: withReq(func(r *pb.RangeRequest) { r.KeysOnly = true }), keys: visible, count: 2},
		{name: "explicit range", req: rangeReq("/app/b", "/app/z"), keys: []string{"/app/b"}, count: 1, values: true},
		{name: "from key", req: rangeReq("/app/", "\x00"), keys: visible, count: 2, values: true},
		{name: "only hidden keys", req: rangeReq("/app/s", "/app/t"), keys: []string{}, count: 0},
	}
	check := func(t *testing.T, tt rangeCase, r *pb.RangeResponse) {
		t.Helper()
		wantKeys(t, "kvs", keysOf(r.Kvs), tt.keys)
		if r.Count != tt.count || r.More != tt.more {
			t.Fatalf("count %d more %v, want count %d more %v", r.Count, r.More, tt.count, tt.more)
		}
		for _, kv := range r.Kvs {
			if tt.values != (len(kv.Value) > 0) {
				t.Fatalf("%s: value %q, want values %v", kv.Key, kv.Value, tt.values)
			}
		}
	}
	for _, tt := range tests {
		t.Run("Range/"+tt.name, func(t *testing.T) {
			r, err := web.Range(testCtx(t), tt.req)
			mustOK(t, err)
			check(t, tt, r)
		})
		if tt.req.SortOrder != pb.RangeRequest_NONE {
			continue // etcd's RangeStream does not sort: sorted cases are Range-only
		}
		t.Run("RangeStream/"+tt.name, func(t *testing.T) {
			s, err := web.RangeStream(testCtx(t), tt.req)
			mustOK(t, err)
			merged := &pb.RangeResponse{}
			for {
				m, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				mustOK(t, err)
				mergeRange(merged, m.RangeResponse)
			}
			check(t, tt, merged)
		})
		t.Run("Txn/"+tt.name, func(t *testing.T) {
			r, err := web.Txn(testCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{opRange(tt.req)}})
			mustOK(t, err)
			if len(r.Responses) != 1 || r.Responses[0].GetResponseRange() == nil {
				t.Fatalf("txn responses: %v", r.Responses)
			}
			check(t, tt, r.Responses[0].GetResponseRange())
		})
	}

	t.Run("client GetStream", func(t *testing.T) {
		ctx := testCtx(t)
		ch, err := e.client(t, "web").GetStream(ctx, "/app/", clientv3.WithPrefix())
		mustOK(t, err)
		r, err := clientv3.GetStreamToGetResponse(ch)
		mustOK(t, err)
		wantKeys(t, "GetStream", keysOf(r.Kvs), visible)
		if r.Count != 2 {
			t.Fatalf("count %d", r.Count)
		}
	})
	t.Run("unfiltered for admin", func(t *testing.T) {
		r, err := e.kv(t, "admin").Range(testCtx(t), prefixReq("/app/"))
		mustOK(t, err)
		wantKeys(t, "admin", keysOf(r.Kvs), []string{"/app/a", "/app/b", "/app/secret/x", "/app/secret/y"})
	})
	t.Run("nested txn range", func(t *testing.T) {
		r, err := web.Txn(testCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{
			opPut("/app/c", "3"),
			opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(prefixReq("/app/"))}}),
		}})
		mustOK(t, err)
		rr := r.Responses[1].GetResponseTxn().GetResponses()[0].GetResponseRange()
		wantKeys(t, "nested range", keysOf(rr.Kvs), []string{"/app/a", "/app/b", "/app/c"})
		if rr.Count != 3 {
			t.Fatalf("nested count %d, want 3", rr.Count)
		}
	})
}

// mergeRange merges RangeStream chunks as client/v3 does (Kvs appended,
// scalars from the chunk that sets them).
func mergeRange(dst, src *pb.RangeResponse) {
	if src == nil {
		return
	}
	dst.Kvs = append(dst.Kvs, src.Kvs...)
	if src.Header != nil {
		dst.Header = src.Header
	}
	if src.Count != 0 {
		dst.Count = src.Count
	}
	if src.More {
		dst.More = true
	}
}

// TestKVDeletePrevKV: a wholly allowed delete returns its prev_kvs.
func TestKVDeletePrevKV(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.put(t, "/app/d/1", "1")
	e.put(t, "/app/d/2", "2")
	r, err := e.kv(t, "web").DeleteRange(testCtx(t), &pb.DeleteRangeRequest{
		Key: []byte("/app/d/"), RangeEnd: []byte("/app/d0"), PrevKv: true,
	})
	mustOK(t, err)
	if r.Deleted != 2 {
		t.Fatalf("deleted %d", r.Deleted)
	}
	wantKeys(t, "prev_kvs", keysOf(r.PrevKvs), []string{"/app/d/1", "/app/d/2"})
	if got := strings.Join(e.keys(t, "/app/d/"), ","); got != "" {
		t.Fatalf("left: %s", got)
	}
}
