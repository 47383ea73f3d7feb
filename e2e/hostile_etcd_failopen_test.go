package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// hefWebMaintenance lets web read maintenance state (alarm lists): so
// that an alarm request whose action etcd does not name is judged as the
// change it may be, not as the read web is allowed.
const hefWebMaintenance = `
  - name: web-maintenance-read
    description: fail-open suite only; web may list alarms.
    source: "spiffe://example.org/web"
    resources: [maintenance]
    actions: [read]
    effect: allow
`

// hefBrokenRego is a module in package storegate.authz whose rules make
// evaluation fail for some ops (a complete rule with two values is an
// evaluation error) and take far longer than the gateway's evaluation
// deadline for others (where the shipped rules would allow if it finished).
const hefBrokenRego = `package storegate.authz

# Conflicts with the allow rules wherever they hold: evaluation fails.
allow := false if {
	startswith(input.op.key, "/app/boom")
}

allow := false if {
	input.op.resource == "lease"
	input.caller.id == "spiffe://example.org/web"
}

# Would not change the answer, but only after tens of millions of steps
# (a false value is never skipped: it could conflict with a true one).
allow := false if {
	input.op.key == "/app/slow"
	count([1 | some i in numbers.range(1, 4000); some j in numbers.range(1, 4000); (i * j) % 9973 == 1]) < 0
}
`

// hefKVCalls is every call etcd's metrics count on the services a write
// could go through.
func hefKVCalls(t *testing.T, e *heEnv) float64 {
	t.Helper()
	var n float64
	for _, svc := range []string{"etcdserverpb.KV", "etcdserverpb.Lease", "v3lockpb.Lock", "v3electionpb.Election", "etcdserverpb.Auth", "etcdserverpb.Cluster"} {
		n += heEtcdMetric(t, e, "grpc_server_started_total", `grpc_service="`+svc+`"`)
	}
	return n
}

// TestHostileEtcdFailOpen: class 10, fail open. Unknown RPCs and services,
// JSON paths etcd's HTTP gateway would serve, empty txn request ops,
// enum values etcd does not name, and a policy whose evaluation errors or
// times out: each is refused (or judged exactly as etcd reads it), and
// nothing reaches etcd.
func TestHostileEtcdFailOpen(t *testing.T) {
	e := newHeEnv(t, heShipped(t)+hefWebMaintenance)
	e.put(t, "/app/e/k", "v1")
	e.put(t, "/app/e/k", "v2")
	e.put(t, "/app/secret/token", "SECRET-TOKEN")

	t.Run("unknown methods and services", func(t *testing.T) {
		put, _ := proto.Marshal(&pb.PutRequest{Key: []byte("/app/f/x"), Value: []byte("x")})
		txn, _ := proto.Marshal(&pb.TxnRequest{Success: []*pb.RequestOp{heOpPut("/app/f/x", "x", 0)}})
		methods := []string{
			"/etcdserverpb.KV/Nope", "/etcdserverpb.Nope/Range", "/etcdserverpb.Nope/Put",
			"/etcdserverpb.kv/Put", "/etcdserverpb.KV/put", "/ETCDSERVERPB.KV/PUT", "/etcdserverpb.KV/Put/",
			"/etcdserverpb.KV//Put", "//etcdserverpb.KV/Put", "/etcdserverpb.KV.Put", "/etcdserverpb.KV/Put/x",
			"/etcdserverpb.KV/Put ", "/etcdserverpb.KV/Put%00", "/etcdserverpb.KV/Txn2", "/etcdserverpb.KV/",
			"/etcdserverpb.KVX/Put", "/etcdserverpb/KV/Put", "/v3/kv/put", "/etcdserverpb.Lease/LeaseNope",
			"/etcdserverpb.Maintenance/Nope", "/etcdserverpb.Auth/Nope", "/v3lockpb.Lock/Nope",
			"/v3electionpb.Election/Nope", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
			"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "/etcdserverpb.Watch/Range",
			"/etcdserverpb.KV/Watch", "/gogoproto.KV/Put", "/mvccpb.KV/Put",
		}
		rev0 := e.rev(t)
		calls0 := hefKVCalls(t, e)
		if calls0 == 0 {
			t.Fatal("etcd's metrics count no calls: grpc_server_started_total not found")
		}
		for _, m := range methods {
			for _, c := range []struct {
				who  string
				conn *grpc.ClientConn
			}{{"web", e.web}, {"admin", e.admin}} {
				for _, body := range [][]byte{put, txn} {
					reply, err := heInvokeRaw(t, c.conn, m, body)
					if code := status.Code(err); code != codes.Unimplemented && code != codes.PermissionDenied {
						t.Errorf("%s %s: %v (reply %q), want Unimplemented or PermissionDenied", c.who, m, err, reply)
					}
				}
			}
		}
		if calls := hefKVCalls(t, e); calls != calls0 {
			t.Errorf("etcd served %v calls during the unknown-method attacks", calls-calls0)
		}
		if rev := e.rev(t); rev != rev0 {
			t.Errorf("etcd's revision moved %d -> %d", rev0, rev)
		}
		if kv := e.get(t, "/app/f/x"); kv != nil {
			t.Errorf("/app/f/x written in etcd: %q", kv.Value)
		}

		// etcd's HTTP/JSON gateway paths, over HTTP/2 and HTTP/1.1.
		for _, h2 := range []bool{true, false} {
			cfg := heTLS(t, e.p, "web")
			if !h2 {
				cfg.NextProtos = []string{"http/1.1"}
			}
			tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2}
			if !h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for _, path := range []string{"/v3/kv/put", "/v3beta/kv/put", "/v3alpha/kv/put", "/v3/kv/txn", "/v3/kv/range",
				"/v3/auth/authenticate", "/v3/maintenance/status", "/etcdserverpb.KV/Put", "/version", "/health", "/metrics", "/v2/keys/app/f/x"} {
				for _, ct := range []string{"application/json", "application/grpc+json", "application/grpc-web", "text/plain"} {
					body := `{"key":"L2FwcC9mL3g=","value":"eA=="}`
					if strings.Contains(path, "txn") {
						body = `{"success":[{"requestPut":{"key":"L2FwcC9mL3g=","value":"eA=="}}]}`
					}
					req, err := http.NewRequest(http.MethodPost, "https://"+e.gw.addr+path, strings.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					req.Header.Set("Content-Type", ct)
					resp, err := hc.Do(req)
					if err != nil {
						continue // refused at the transport: fine
					}
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
					resp.Body.Close()
					grpcStatus := resp.Header.Get("Grpc-Status") + resp.Trailer.Get("Grpc-Status")
					if resp.StatusCode == http.StatusOK && (grpcStatus == "" || grpcStatus == "0") {
						t.Errorf("h2=%v POST %s (%s): 200 %q, want a refusal", h2, path, ct, b)
					}
					heNoLeak(t, "POST "+path, []string{"SECRET-TOKEN", "etcdserver", "etcdcluster"}, string(b))
				}
			}
		}
		if rev := e.rev(t); rev != rev0 {
			t.Errorf("etcd's revision moved %d -> %d after JSON paths", rev0, rev)
		}
		if kv := e.get(t, "/app/f/x"); kv != nil {
			t.Errorf("/app/f/x written in etcd: %q", kv.Value)
		}
		// The known method still works (the attacks did not break it).
		if _, err := heInvokeRaw(t, e.web, "/etcdserverpb.KV/Put", put); err != nil {
			t.Errorf("the real Put: %v", err)
		}
		if _, err := e.direct.Delete(heCtx(t), "/app/f/x"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("empty request ops", func(t *testing.T) {
		empty := func() *pb.RequestOp { return &pb.RequestOp{} }
		cmpTrue := &pb.Compare{Key: []byte("/app/e/k"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}
		txns := map[string]*pb.TxnRequest{
			"alone":                 {Success: []*pb.RequestOp{empty()}},
			"after a put":           {Success: []*pb.RequestOp{heOpPut("/app/f/1", "x", 0), empty()}},
			"before a put":          {Success: []*pb.RequestOp{empty(), heOpPut("/app/f/1", "x", 0)}},
			"in the branch not run": {Compare: []*pb.Compare{cmpTrue}, Success: []*pb.RequestOp{heOpPut("/app/f/1", "x", 0)}, Failure: []*pb.RequestOp{empty()}},
			"in failure, alone":     {Failure: []*pb.RequestOp{empty()}},
			"nil put":               {Success: []*pb.RequestOp{heOpPut("/app/f/1", "x", 0), {Request: &pb.RequestOp_RequestPut{}}}},
			"nil range":             {Success: []*pb.RequestOp{heOpPut("/app/f/1", "x", 0), {Request: &pb.RequestOp_RequestRange{}}}},
			"nil delete":            {Success: []*pb.RequestOp{heOpPut("/app/f/1", "x", 0), {Request: &pb.RequestOp_RequestDeleteRange{}}}},
			"nested depth 3":        heNest(3, empty(), false),
			"nested depth 5, not run": heNest(5, empty(), true, &pb.Compare{Key: []byte("/app/e/k"), Target: pb.Compare_VERSION,
				Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 0}}),
			"empty put":    {Success: []*pb.RequestOp{heOpPut("/app/f/1", "x", 0), {Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{}}}}},
			"empty range":  {Success: []*pb.RequestOp{heOpPut("/app/f/1", "x", 0), {Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{}}}}},
			"empty delete": {Success: []*pb.RequestOp{heOpPut("/app/f/1", "x", 0), {Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{}}}}},
		}
		rev0 := e.rev(t)
		for name, txn := range txns {
			for _, c := range []struct {
				who  string
				conn *grpc.ClientConn
			}{{"web", e.web}, {"admin", e.admin}} {
				_, err := pb.NewKVClient(c.conn).Txn(heCtx(t), txn)
				heCode(t, c.who+" txn with an empty op "+name, err, codes.InvalidArgument)
			}
		}
		// On the wire: a RequestOp that is zero bytes, one whose oneof
		// field is present but empty, and a txn whose op list holds them.
		putOp, _ := proto.Marshal(heOpPut("/app/f/1", "x", 0))
		raws := map[string][]byte{
			"zero-length op":       protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), nil),
			"op with empty range":  protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), heBytesField(nil, 1, nil)),
			"op with empty put":    protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), heBytesField(nil, 2, nil)),
			"op with empty delete": protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), heBytesField(nil, 3, nil)),
		}
		for name, raw := range raws {
			body := append(protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), putOp), raw...)
			for _, conn := range []*grpc.ClientConn{e.web, e.admin} {
				_, err := heInvokeRaw(t, conn, "/etcdserverpb.KV/Txn", body)
				heCode(t, "raw txn, "+name, err, codes.InvalidArgument)
			}
		}
		if rev := e.rev(t); rev != rev0 {
			t.Errorf("etcd's revision moved %d -> %d", rev0, rev)
		}
		for k := range e.all(t) {
			if strings.HasPrefix(k, "/app/f/") || strings.HasPrefix(k, "/app/n/") {
				t.Errorf("%q written in etcd by a refused txn", k)
			}
		}
		// A txn op whose oneof holds a nil txn goes on the wire as an empty
		// nested txn, which etcd runs (doing nothing): judged as that, only
		// the put beside it is written.
		for _, conn := range []*grpc.ClientConn{e.web, e.admin} {
			_, err := pb.NewKVClient(conn).Txn(heCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{heOpPut("/app/f/1", "x", 0), {Request: &pb.RequestOp_RequestTxn{}}}})
			if err != nil {
				t.Errorf("txn with an empty nested txn: %v", err)
			}
		}
		if rev := e.rev(t); rev != rev0+2 {
			t.Errorf("etcd's revision moved %d -> %d for two puts", rev0, rev)
		}
		for k := range e.all(t) {
			if strings.HasPrefix(k, "/app/f/") && k != "/app/f/1" || strings.HasPrefix(k, "/app/n/") {
				t.Errorf("%q written in etcd", k)
			}
		}
		if _, err := e.direct.Delete(heCtx(t), "/app/f/1"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("unknown enum values", func(t *testing.T) {
		direct := pb.NewKVClient(e.direct.ActiveConnection())
		// Compares: etcd compares a target it does not know as equal and
		// takes a result it does not know as true. The gateway judges the
		// compare as the read it is and lets etcd decide.
		i := 0
		for _, tg := range []pb.Compare_CompareTarget{0, 3, 4, 5, 99, -1} {
			for _, res := range []pb.Compare_CompareResult{0, 1, 3, 4, 77, -3} {
				i++
				c := &pb.Compare{Key: []byte("/app/e/k"), Target: tg, Result: res, TargetUnion: &pb.Compare_Version{Version: 2}}
				gw := &pb.TxnRequest{Compare: []*pb.Compare{c}, Success: []*pb.RequestOp{heOpPut(fmt.Sprintf("/app/f/s%d", i), "s", 0)},
					Failure: []*pb.RequestOp{heOpPut(fmt.Sprintf("/app/f/f%d", i), "f", 0)}}
				dr := &pb.TxnRequest{Compare: []*pb.Compare{proto.Clone(c).(*pb.Compare)}}
				what := fmt.Sprintf("compare target %d result %d", tg, res)
				gresp, gerr := pb.NewKVClient(e.web).Txn(heCtx(t), gw)
				dresp, derr := direct.Txn(heCtx(t), dr)
				switch {
				case (gerr != nil) != (derr != nil):
					t.Errorf("%s: gateway %v, etcd %v", what, gerr, derr)
				case gerr != nil:
					if status.Code(gerr) != status.Code(derr) {
						t.Errorf("%s: gateway %v, etcd %v", what, gerr, derr)
					}
				case gresp.Succeeded != dresp.Succeeded:
					t.Errorf("%s: gateway's txn succeeded=%v, etcd's %v", what, gresp.Succeeded, dresp.Succeeded)
				}
				// The same compare on a secret is the read it is, whatever
				// its target: denied.
				c2 := proto.Clone(c).(*pb.Compare)
				c2.Key = []byte("/app/secret/token")
				_, err := pb.NewKVClient(e.web).Txn(heCtx(t), &pb.TxnRequest{Compare: []*pb.Compare{c2}, Success: []*pb.RequestOp{heOpPut("/app/f/leak", "x", 0)}})
				heDenied(t, what+" on a secret", err)
			}
		}
		if e.get(t, "/app/f/leak") != nil {
			t.Error("/app/f/leak written: a compare on a secret got through")
		}
		// Sort order and target etcd does not name: etcd refuses them; the
		// gateway refuses them too (or denies), also on a range it filters
		// and inside a txn, and never answers with a secret.
		for _, so := range []pb.RangeRequest_SortOrder{0, 3, 99, -1} {
			for _, st := range []pb.RangeRequest_SortTarget{0, 5, 99, -1} {
				if so == 0 && st == 0 {
					continue
				}
				for _, rg := range [][2]string{{"/app/e/", "/app/e0"}, {"/app/", "/app0"}, {"/app/secret/", "/app/secret0"}} {
					r := &pb.RangeRequest{Key: []byte(rg[0]), RangeEnd: []byte(rg[1]), SortOrder: so, SortTarget: st}
					what := fmt.Sprintf("range [%q,%q) sort order %d target %d", rg[0], rg[1], so, st)
					_, derr := direct.Range(heCtx(t), r)
					resp, err := pb.NewKVClient(e.web).Range(heCtx(t), r)
					if err == nil {
						if derr != nil {
							t.Errorf("%s: the gateway answered, etcd refuses it: %v", what, derr)
						}
						for _, kv := range resp.Kvs {
							if !webReadable(string(kv.Key)) {
								t.Errorf("%s: returned %q", what, kv.Key)
							}
						}
					} else if c := status.Code(err); c != codes.InvalidArgument && c != codes.PermissionDenied {
						t.Errorf("%s: %v", what, err)
					}
					heNoLeak(t, what, []string{"SECRET-TOKEN"}, fmt.Sprint(resp), fmt.Sprint(err))
					tresp, err := pb.NewKVClient(e.web).Txn(heCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{
						heOpPut("/app/f/sorted", "x", 0), {Request: &pb.RequestOp_RequestRange{RequestRange: r}}}})
					if err == nil && derr != nil {
						t.Errorf("txn %s: the gateway answered, etcd refuses it", what)
					}
					heNoLeak(t, "txn "+what, []string{"SECRET-TOKEN"}, fmt.Sprint(tresp))
				}
			}
		}
		// Watch filters etcd does not name: etcd ignores them. A watch web
		// may not make is refused whatever its filters; one on a range it
		// reads in part never shows a secret.
		for _, fs := range [][]pb.WatchCreateRequest_FilterType{{2}, {99}, {-1}, {0, 1, 2, 77}} {
			what := fmt.Sprintf("watch with filters %v", fs)
			w := heOpenWatch(t, e.web)
			w.create(t, &pb.WatchCreateRequest{Key: []byte("/app/secret/"), RangeEnd: []byte("/app/secret0"), Filters: fs, PrevKv: true})
			got := w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Created || r.Canceled })
			if last := got[len(got)-1]; !last.Canceled {
				t.Errorf("%s on /app/secret/: %v, want canceled", what, last)
			}
			w.stop()
			w = heOpenWatch(t, e.web)
			w.create(t, &pb.WatchCreateRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), Filters: fs, PrevKv: true})
			got = w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Created || r.Canceled })
			if last := got[len(got)-1]; last.Canceled {
				w.stop()
				continue // refusing an odd filter is fine
			}
			e.put(t, "/app/secret/token", "SECRET-TOKEN")
			e.put(t, "/app/e/marker", "m")
			if slices.Contains(fs, pb.WatchCreateRequest_NOPUT) {
				// No put events, as etcd filters them: nothing to wait for.
				for _, r := range w.drain(500 * time.Millisecond) {
					for _, ev := range r.Events {
						t.Errorf("%s on /app/: event on %q despite NOPUT", what, ev.Kv.Key)
					}
				}
				w.stop()
				continue
			}
			evs := w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool {
				for _, ev := range r.Events {
					if string(ev.Kv.Key) == "/app/e/marker" {
						return true
					}
				}
				return r.Canceled
			})
			for _, r := range evs {
				for _, ev := range r.Events {
					if !webReadable(string(ev.Kv.Key)) || (ev.PrevKv != nil && !webReadable(string(ev.PrevKv.Key))) {
						t.Errorf("%s on /app/: event on %q", what, ev.Kv.Key)
					}
				}
			}
			w.stop()
		}
		// Alarm actions etcd does not name are judged as the change they
		// may be: web may only list alarms.
		alarms0, err := pb.NewMaintenanceClient(e.direct.ActiveConnection()).Alarm(heCtx(t), &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pb.NewMaintenanceClient(e.web).Alarm(heCtx(t), &pb.AlarmRequest{Action: pb.AlarmRequest_GET}); err != nil {
			t.Errorf("web lists alarms: %v", err)
		}
		for _, act := range []pb.AlarmRequest_AlarmAction{1, 2, 3, 99, -1} {
			for _, al := range []pb.AlarmType{pb.AlarmType_NOSPACE, pb.AlarmType_CORRUPT, 42} {
				_, err := pb.NewMaintenanceClient(e.web).Alarm(heCtx(t), &pb.AlarmRequest{Action: act, Alarm: al, MemberID: 0})
				heDenied(t, fmt.Sprintf("web alarm action %d type %d", act, al), err)
			}
		}
		alarms, err := pb.NewMaintenanceClient(e.direct.ActiveConnection()).Alarm(heCtx(t), &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		if err != nil || len(alarms.Alarms) != len(alarms0.Alarms) {
			t.Errorf("etcd's alarms changed: %v -> %v (%v)", alarms0.Alarms, alarms.GetAlarms(), err)
		}
	})

	t.Run("policy evaluation fails", func(t *testing.T) {
		p := newPKI(t, "admin", "web")
		ec := startEtcd(t, p, 1)
		dir := copyPolicies(t, heShipped(t))
		if err := os.WriteFile(filepath.Join(dir, "broken.rego"), []byte(hefBrokenRego), 0o644); err != nil {
			t.Fatal(err)
		}
		gw := startGateway(t, p, ec, gatewayOpts{policyDir: dir})
		b := &heEnv{p: p, ec: ec, gw: gw, direct: heDirect(t, p, ec.endpoints, "etcd"), web: heConn(t, p, gw.addr, "web"), admin: heConn(t, p, gw.addr, "admin")}
		for _, k := range []string{"/app/boom", "/app/boom/x", "/app/boomz", "/app/slow", "/app/ok"} {
			b.put(t, k, "seeded")
		}
		kv := pb.NewKVClient(b.web)
		// Control: the policy still allows what it allows.
		if _, err := kv.Put(heCtx(t), &pb.PutRequest{Key: []byte("/app/ok"), Value: []byte("web")}); err != nil {
			t.Fatalf("web puts /app/ok: %v", err)
		}
		leases0, err := b.direct.Leases(heCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		rev0 := b.rev(t)
		for round := range 2 { // twice: an error is not cached as an answer
			keys := []string{"/app/boom", "/app/boom/x", "/app/boomz", "/app/slow"}
			if round == 1 {
				keys = keys[:3] // each /app/slow decision costs the 1 s deadline
			}
			for _, k := range keys {
				what := fmt.Sprintf("round %d %q", round, k)
				start := time.Now()
				_, err := kv.Put(heCtx(t), &pb.PutRequest{Key: []byte(k), Value: []byte("PWNED")})
				heDenied(t, "Put "+what, err)
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("Put %s: answered after %v", what, d)
				}
				_, err = kv.Range(heCtx(t), &pb.RangeRequest{Key: []byte(k)})
				heDenied(t, "Range "+what, err)
				_, err = kv.DeleteRange(heCtx(t), &pb.DeleteRangeRequest{Key: []byte(k)})
				heDenied(t, "DeleteRange "+what, err)
				_, err = kv.Txn(heCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{heOpPut("/app/ok2", "x", 0), heOpPut(k, "PWNED", 0)}})
				heDenied(t, "Txn put "+what, err)
				_, err = kv.Txn(heCtx(t), &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte(k), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL,
					TargetUnion: &pb.Compare_Value{Value: []byte("seeded")}}}, Success: []*pb.RequestOp{heOpPut("/app/ok2", "x", 0)}})
				heDenied(t, "Txn compare "+what, err)
				w := heOpenWatch(t, b.web)
				w.create(t, &pb.WatchCreateRequest{Key: []byte(k)})
				got := w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Created || r.Canceled })
				if last := got[len(got)-1]; !last.Canceled {
					t.Errorf("Watch %s: created, want canceled", what)
				}
				w.stop()
			}
			// A range over them all: filtered, the failing keys left out.
			r, err := kv.Range(heCtx(t), &pb.RangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0")})
			if err != nil {
				t.Errorf("web ranges /app/: %v", err)
			} else {
				var keys []string
				for _, x := range r.Kvs {
					keys = append(keys, string(x.Key))
				}
				if len(keys) != 1 || keys[0] != "/app/ok" || r.Count != 1 {
					t.Errorf("web ranges /app/: %q (count %d), want only /app/ok", keys, r.Count)
				}
			}
			// The prefix itself: its evaluation fails.
			_, err = kv.Range(heCtx(t), &pb.RangeRequest{Key: []byte("/app/boom"), RangeEnd: []byte("/app/boon")})
			heDenied(t, "Range prefix /app/boom", err)
			// Lease ops of web: evaluation fails, no lease is made.
			resp, err := pb.NewLeaseClient(b.web).LeaseGrant(heCtx(t), &pb.LeaseGrantRequest{TTL: 60})
			heDenied(t, fmt.Sprintf("round %d LeaseGrant", round), err)
			if resp != nil && resp.ID != 0 {
				t.Errorf("LeaseGrant answered lease %x", resp.ID)
			}
			_, err = pb.NewLeaseClient(b.web).LeaseLeases(heCtx(t), &pb.LeaseLeasesRequest{})
			heDenied(t, "LeaseLeases", err)
		}
		if rev := b.rev(t); rev != rev0 {
			t.Errorf("etcd's revision moved %d -> %d", rev0, rev)
		}
		for _, k := range []string{"/app/boom", "/app/boom/x", "/app/boomz", "/app/slow"} {
			if got := b.get(t, k); got == nil || !bytes.Equal(got.Value, []byte("seeded")) {
				t.Errorf("%q in etcd: %v", k, got)
			}
		}
		if leases, err := b.direct.Leases(heCtx(t)); err != nil || len(leases.Leases) != len(leases0.Leases) {
			t.Errorf("leases in etcd: %d -> %d (%v)", len(leases0.Leases), len(leases.Leases), err)
		}
		logs := gw.logs.String()
		if !strings.Contains(logs, "policy error, denying") {
			t.Error("the gateway logged no policy error")
		}
		if !strings.Contains(logs, "evaluation timed out") {
			t.Error("the gateway logged no evaluation timeout: /app/slow was denied for another reason")
		}
	})
}
