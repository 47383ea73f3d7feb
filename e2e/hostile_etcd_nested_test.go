package e2e

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func heOpPut(key, value string, lease int64) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: lease}}}
}

func heOpDel(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func heOpGet(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func heOpTxn(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

// heNest wraps inner in depth-1 transactions below a top-level one (depth
// levels in all). Every level first puts an allowed key of its own, so a
// txn that gets through writes something visible. inner sits in the
// innermost success branch, or its failure branch with fail (a branch that
// will not run: it must be judged all the same); compares, if any, go to
// the innermost level.
func heNest(depth int, inner *pb.RequestOp, fail bool, cmp ...*pb.Compare) *pb.TxnRequest {
	in := &pb.TxnRequest{Compare: cmp}
	if fail {
		in.Success = []*pb.RequestOp{heOpPut(fmt.Sprintf("/app/n/ok%d", depth), "x", 0)}
		in.Failure = []*pb.RequestOp{inner}
	} else {
		in.Success = []*pb.RequestOp{heOpPut(fmt.Sprintf("/app/n/ok%d", depth), "x", 0), inner}
	}
	for d := depth - 1; d >= 1; d-- {
		in = &pb.TxnRequest{Success: []*pb.RequestOp{heOpPut(fmt.Sprintf("/app/n/ok%d", d), "x", 0), heOpTxn(in)}}
	}
	return in
}

// TestHostileEtcdNested: class 2, nested and hidden parts of a body. A
// forbidden op deep inside nested transactions, a compare on a secret (a
// value compare is an oracle), a lease attachment whose keys web may not
// write: all denied, and etcd unchanged.
func TestHostileEtcdNested(t *testing.T) {
	e := newHeEnv(t, "")
	for k, v := range heSeed {
		e.put(t, k, v)
	}
	e.put(t, "/app/secret/x", "right")
	kv := pb.NewKVClient(e.web)

	// checkUnchanged: the txn was refused and etcd did nothing.
	checkUnchanged := func(t *testing.T, what string, rev0 int64, before map[string]string) {
		t.Helper()
		if rev := e.rev(t); rev != rev0 {
			t.Errorf("%s: etcd's revision moved %d -> %d", what, rev0, rev)
		}
		after := e.all(t)
		for k, v := range before {
			if a, ok := after[k]; !ok || string(a.Value) != v {
				t.Errorf("%s: %q changed in etcd", what, k)
			}
		}
		for k := range after {
			if _, ok := before[k]; !ok && !heReserved(k) {
				t.Errorf("%s: %q written in etcd", what, k)
			}
		}
	}
	snapshot := func(t *testing.T) map[string]string {
		m := map[string]string{}
		for k, v := range e.all(t) {
			m[k] = string(v.Value)
		}
		return m
	}

	forbidden := []struct {
		name string
		op   *pb.RequestOp
	}{
		{"put secret", heOpPut("/app/secret/x", "PWNED", 0)},
		{"put outside", heOpPut("/other/x", "PWNED", 0)},
		{"put \\xff key", heOpPut("\xff\xff", "PWNED", 0)},
		{"delete secret", heOpDel("/app/secret/x", "")},
		{"delete from /app/ on", heOpDel("/app/", "\x00")},
		{"delete secret prefix without slash", heOpDel("/app/secret", "/app/secret0")},
		{"delete everything", heOpDel("\x00", "\x00")},
		{"get secret", heOpGet("/app/secret/x", "")},
		{"get outside", heOpGet("/other/x", "")},
		{"get secret nul", heOpGet("/app/secret/\x00nul", "")},
	}
	t.Run("forbidden op deep inside", func(t *testing.T) {
		for depth := 2; depth <= 10; depth++ {
			for _, f := range forbidden {
				for _, fail := range []bool{false, true} {
					what := fmt.Sprintf("depth %d, %s, failure branch %v", depth, f.name, fail)
					rev0, before := e.rev(t), snapshot(t)
					var tr heTrailer
					resp, err := kv.Txn(heCtx(t), heNest(depth, f.op, fail), tr.opt())
					heDenied(t, what, err)
					if resp != nil {
						heNoLeak(t, what, []string{"right"}, resp.String())
					}
					heNoLeak(t, what+" trailer", []string{"right"}, tr.reason())
					checkUnchanged(t, what, rev0, before)
				}
			}
		}
	})

	t.Run("forbidden op after many allowed siblings", func(t *testing.T) {
		var ops []*pb.RequestOp
		for i := range 40 {
			ops = append(ops, heOpPut(fmt.Sprintf("/app/n/s%d", i), "x", 0))
		}
		ops = append(ops, heOpTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{heOpTxn(&pb.TxnRequest{Success: []*pb.RequestOp{heOpDel("/app/secret/", "/app/secret0")}})}}))
		rev0, before := e.rev(t), snapshot(t)
		_, err := kv.Txn(heCtx(t), &pb.TxnRequest{Success: ops})
		heDenied(t, "41st op", err)
		checkUnchanged(t, "41st op", rev0, before)
	})

	t.Run("compares on secrets", func(t *testing.T) {
		cmps := map[string]func(guess string) *pb.Compare{
			"value": func(g string) *pb.Compare {
				return &pb.Compare{Key: []byte("/app/secret/x"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte(g)}}
			},
			"value greater": func(g string) *pb.Compare {
				return &pb.Compare{Key: []byte("/app/secret/x"), Target: pb.Compare_VALUE, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Value{Value: []byte(g)}}
			},
			"version": func(string) *pb.Compare {
				return &pb.Compare{Key: []byte("/app/secret/x"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}
			},
			"create (existence)": func(g string) *pb.Compare {
				name := map[string]string{"right": "x", "wrong": "nope"}[g] // x exists
				return &pb.Compare{Key: []byte("/app/secret/" + name), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}
			},
			"mod": func(string) *pb.Compare {
				return &pb.Compare{Key: []byte("/app/secret/x"), Target: pb.Compare_MOD, Result: pb.Compare_LESS, TargetUnion: &pb.Compare_ModRevision{ModRevision: 1 << 40}}
			},
			"lease": func(string) *pb.Compare {
				return &pb.Compare{Key: []byte("/app/secret/x"), Target: pb.Compare_LEASE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Lease{Lease: 0}}
			},
			"value over a partly readable range": func(g string) *pb.Compare {
				return &pb.Compare{Key: []byte("/app/"), RangeEnd: []byte("/app0"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte(g)}}
			},
			"value from-key over everything": func(g string) *pb.Compare {
				return &pb.Compare{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Target: pb.Compare_VALUE, Result: pb.Compare_NOT_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte(g)}}
			},
			"version outside": func(string) *pb.Compare {
				return &pb.Compare{Key: []byte("/other/x"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 1}}
			},
		}
		for name, mk := range cmps {
			for depth := 1; depth <= 6; depth += 5 {
				// The right guess and a wrong one must look the same.
				var answers, errs [2]string
				for i, guess := range []string{"right", "wrong"} {
					what := fmt.Sprintf("compare %s, depth %d, guess %q", name, depth, guess)
					rev0, before := e.rev(t), snapshot(t)
					var tr heTrailer
					resp, err := kv.Txn(heCtx(t), heNest(depth, heOpPut("/app/n/y", "y", 0), false, mk(guess)), tr.opt())
					heDenied(t, what, err)
					if resp != nil {
						t.Errorf("%s: answered succeeded=%v", what, resp.Succeeded)
					}
					answers[i] = fmt.Sprint(err) + "|" + tr.reason()
					errs[i] = fmt.Sprint(err)
					checkUnchanged(t, what, rev0, before)
				}
				if errs[0] != errs[1] {
					t.Errorf("compare %s depth %d: the right and the wrong guess get different errors: %s / %s", name, depth, errs[0], errs[1])
				}
				if answers[0] != answers[1] {
					// Only the key the caller named may differ; for these
					// compares it does not, except in the existence probe.
					if name != "create (existence)" {
						t.Errorf("compare %s depth %d: the right and the wrong guess are answered differently:\n%s\n%s", name, depth, answers[0], answers[1])
					}
				}
			}
		}
	})

	t.Run("lease attachments", func(t *testing.T) {
		adminLease := heGrant(t, e.admin, 120)
		if _, err := pb.NewKVClient(e.admin).Put(heCtx(t), &pb.PutRequest{Key: []byte("/app/secret/on-admin-lease"), Value: []byte("S"), Lease: adminLease}); err != nil {
			t.Fatalf("admin puts on its lease: %v", err)
		}
		adminEmpty := heGrant(t, e.admin, 120) // nothing on it: only its owner can refuse web
		webLease := heGrant(t, e.web, 120)
		// A key web may not write, attached to web's own lease behind its back.
		e.put(t, "/app/secret/on-web-lease", "S", clientv3.WithLease(clientv3.LeaseID(webLease)))
		direct, err := e.direct.Grant(heCtx(t), 120)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range []struct {
			name string
			id   int64
		}{{"admin's lease holding a secret", adminLease}, {"admin's empty lease", adminEmpty}, {"web's lease holding a secret", webLease}, {"a lease granted in etcd directly", int64(direct.ID)}} {
			for depth := 1; depth <= 8; depth += 7 {
				what := fmt.Sprintf("put /app/n/z on %s at depth %d", l.name, depth)
				rev0, before := e.rev(t), snapshot(t)
				var err error
				if depth == 1 {
					_, err = kv.Put(heCtx(t), &pb.PutRequest{Key: []byte("/app/n/z"), Value: []byte("z"), Lease: l.id})
				} else {
					_, err = kv.Txn(heCtx(t), heNest(depth, heOpPut("/app/n/z", "z", l.id), false))
				}
				heDenied(t, what, err)
				checkUnchanged(t, what, rev0, before)
				_, _, keys := e.ttl(t, l.id)
				for _, k := range keys {
					if k == "/app/n/z" {
						t.Errorf("%s: /app/n/z is on the lease in etcd", what)
					}
				}
			}
		}
	})

	t.Run("filtered range deep inside is narrowed", func(t *testing.T) {
		for depth := 2; depth <= 10; depth += 4 {
			what := fmt.Sprintf("range from /app/ on, depth %d", depth)
			resp, err := kv.Txn(heCtx(t), heNest(depth, heOpGet("/app/", "\x00"), false))
			if err != nil {
				if !heIsDenied(err) {
					t.Errorf("%s: %v", what, err)
				}
				continue
			}
			// Walk down to the innermost answer.
			r := resp
			for d := 1; d < depth; d++ {
				r = r.Responses[1].GetResponseTxn()
			}
			rr := r.Responses[1].GetResponseRange()
			n := 0
			for k := range e.all(t) {
				if k >= "/app/" && webReadable(k) {
					n++
				}
			}
			for _, got := range rr.Kvs {
				if !webReadable(string(got.Key)) {
					t.Errorf("%s: %q (%q) returned", what, got.Key, got.Value)
				}
			}
			if rr.Count > int64(n) {
				t.Errorf("%s: count %d > %d readable", what, rr.Count, n)
			}
			heNoLeak(t, what, heHiddenValues(), resp.String())
		}
		// Clean up what the allowed txns wrote.
		if _, err := e.direct.Delete(heCtx(t), "/app/n/", clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
	})
}
