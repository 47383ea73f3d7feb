package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// hecUser and hecPassword are the gateway's own etcd credentials in the
// credentials test; hecLow is a user with a role that may do nothing.
const (
	hecUser     = "storegate-gw"
	hecPassword = "GW-PASSW0RD-never-shown"
	hecLow      = "lowpriv"
	hecLowPass  = "LOW-PASSW0RD"
)

// hecSimpleToken is the shape of etcd's simple auth tokens.
var hecSimpleToken = regexp.MustCompile(`^[A-Za-z]{16}\.[0-9]+$`)

// hecStartGateway runs the gateway binary like startGateway, but signing in
// to etcd's own auth with username and password_file.
func hecStartGateway(t *testing.T, p *pki, ec *etcdCluster, policyDir string) *gateway {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "etcd-password")
	if err := os.WriteFile(pwFile, []byte(hecPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := gatewayOpts{policyDir: policyDir}.config(t, p, ec)
	cfg.Upstreams.Etcd.Username, cfg.Upstreams.Etcd.PasswordFile = hecUser, pwFile
	return launchGateway(t, cfg, nil)
}

// hecNoCreds fails when an answer's metadata carries a token or the
// gateway's password, or a value shaped like etcd's tokens.
func hecNoCreds(t *testing.T, what string, mds ...metadata.MD) {
	t.Helper()
	for _, md := range mds {
		for k, vs := range md {
			if k == "token" || k == "authorization" {
				t.Errorf("%s: answer metadata %q = %q", what, k, vs)
			}
			for _, v := range vs {
				if strings.Contains(v, hecPassword) || hecSimpleToken.MatchString(v) {
					t.Errorf("%s: answer metadata %q = %q", what, k, v)
				}
			}
		}
	}
}

// TestHostileEtcdCredentials: class 8, credentials. etcd runs with its own
// auth on and the gateway signs in as a user of its own. A caller's token
// metadata — a real token of a user who may do nothing, a bogus one, in
// every spelling etcd reads — never reaches etcd (the caller's requests do
// exactly what they do without it), and the gateway's own credentials never
// reach a caller: Authenticate and the auth admin RPCs are refused to web,
// answered for admin exactly as etcd answers its root, and no answer
// carries a token or the gateway's password.
func TestHostileEtcdCredentials(t *testing.T) {
	p := newPKI(t, "admin", "web")
	ec := startEtcd(t, p, 1)

	// Before auth is on: the harness's "etcd" certificate (CN etcd) is a
	// root user, so direct reads keep working by certificate.
	direct := heDirect(t, p, ec.endpoints, "etcd")
	auth := pb.NewAuthClient(direct.ActiveConnection())
	for _, u := range []*pb.AuthUserAddRequest{
		{Name: "root", Password: "ROOT-PASSW0RD"},
		{Name: "etcd", Options: &authpb.UserAddOptions{NoPassword: true}},
		{Name: hecUser, Password: hecPassword},
		{Name: hecLow, Password: hecLowPass},
	} {
		if _, err := auth.UserAdd(heCtx(t), u); err != nil {
			t.Fatalf("user add %s: %v", u.Name, err)
		}
	}
	if _, err := auth.RoleAdd(heCtx(t), &pb.AuthRoleAddRequest{Name: "nothing"}); err != nil {
		t.Fatal(err)
	}
	for _, g := range [][2]string{{"root", "root"}, {"etcd", "root"}, {hecUser, "root"}, {hecLow, "nothing"}} {
		if _, err := auth.UserGrantRole(heCtx(t), &pb.AuthUserGrantRoleRequest{User: g[0], Role: g[1]}); err != nil {
			t.Fatalf("grant %s to %s: %v", g[1], g[0], err)
		}
	}
	if _, err := auth.AuthEnable(heCtx(t), &pb.AuthEnableRequest{}); err != nil {
		t.Fatal(err)
	}
	gw := hecStartGateway(t, p, ec, copyPolicies(t, heShipped(t)))
	e := &heEnv{p: p, ec: ec, gw: gw, direct: direct, web: heConn(t, p, gw.addr, "web"), admin: heConn(t, p, gw.addr, "admin")}

	// The low user's real token: etcd refuses everything it asks.
	low, err := auth.Authenticate(heCtx(t), &pb.AuthenticateRequest{Name: hecLow, Password: hecLowPass})
	if err != nil {
		t.Fatal(err)
	}
	{
		ctx := metadata.AppendToOutgoingContext(heCtx(t), "token", low.Token)
		if _, err := pb.NewKVClient(direct.ActiveConnection()).Put(ctx, &pb.PutRequest{Key: []byte("/app/c/probe"), Value: []byte("x")}); !heIsDenied(err) {
			t.Fatalf("etcd lets %s put (err %v): the test cannot tell whether its token reaches etcd", hecLow, err)
		}
		// (client/v3 retries an invalid token: a short deadline.)
		bctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		bctx = metadata.AppendToOutgoingContext(bctx, "token", "bogusbogusbogusb.42")
		if _, err := pb.NewKVClient(direct.ActiveConnection()).Range(bctx, &pb.RangeRequest{Key: []byte("/app/c/probe")}); err == nil {
			t.Fatalf("etcd accepts a bogus token: the test cannot tell whether it reaches etcd")
		}
	}

	type spelling struct{ key, value string }
	var spellings []spelling
	for _, k := range []string{"token", "Token", "TOKEN", "authorization", "Authorization", "AUTHORIZATION"} {
		for _, v := range []string{low.Token, "Bearer " + low.Token, "bogusbogusbogusb.42", "", hecLow + ":" + hecLowPass} {
			spellings = append(spellings, spelling{k, v})
		}
	}
	// Both at once, several values, the token repeated.
	spellings = append(spellings, spelling{"token", low.Token + "," + low.Token})

	kv := pb.NewKVClient(e.web)
	with := func(s spelling) context.Context {
		ctx := heCtx(t)
		if s.key == "" {
			return ctx
		}
		if s.key == "token" && strings.Contains(s.value, ",") {
			v := strings.Split(s.value, ",")
			return metadata.AppendToOutgoingContext(ctx, "token", v[0], "token", v[1], "authorization", v[0])
		}
		// grpc-go lowercases keys on the wire, as HTTP/2 requires; send the
		// spelling anyway.
		return metadata.AppendToOutgoingContext(ctx, s.key, s.value)
	}
	webLease := heGrant(t, e.web, 120)

	t.Run("caller tokens do not reach etcd", func(t *testing.T) {
		// The answer without any token, for comparison.
		e.put(t, "/app/c/base", "base")
		e.put(t, "/app/secret/c", "SECRET-C")
		baseline, err := kv.Range(heCtx(t), &pb.RangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range append([]spelling{{}}, spellings...) {
			what := fmt.Sprintf("%q: %q", s.key, s.value)
			key := fmt.Sprintf("/app/c/%02d", i)
			var hdr, tr metadata.MD
			if _, err := kv.Put(with(s), &pb.PutRequest{Key: []byte(key), Value: []byte(s.value)}, grpc.Header(&hdr), grpc.Trailer(&tr)); err != nil {
				t.Errorf("Put with %s: %v (the token reached etcd?)", what, err)
			} else if got := e.get(t, key); got == nil || string(got.Value) != s.value {
				t.Errorf("Put with %s: etcd has %v", what, got)
			}
			hecNoCreds(t, "Put with "+what, hdr, tr)
			r, err := kv.Range(with(s), &pb.RangeRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), KeysOnly: true, Revision: baseline.Header.Revision})
			if err != nil {
				t.Errorf("Range with %s: %v", what, err)
			} else if heoAnswer(r) != heoAnswer(baseline) {
				t.Errorf("Range with %s: %s, without a token %s", what, heoAnswer(r), heoAnswer(baseline))
			}
			// Denied as without a token: the token buys nothing either.
			_, err = kv.Range(with(s), &pb.RangeRequest{Key: []byte("/app/secret/c")})
			heDenied(t, "Range of a secret with "+what, err)
			tx, err := kv.Txn(with(s), &pb.TxnRequest{
				Compare: []*pb.Compare{{Key: []byte(key), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}},
				Success: []*pb.RequestOp{heOpPut(key+"/txn", "t", webLease)}})
			if err != nil || !tx.Succeeded {
				t.Errorf("Txn with %s: %v %v", what, tx, err)
			} else if got := e.get(t, key+"/txn"); got == nil || got.Lease != webLease {
				t.Errorf("Txn with %s: etcd has %v", what, got)
			}
			gr, err := pb.NewLeaseClient(e.web).LeaseGrant(with(s), &pb.LeaseGrantRequest{TTL: 60})
			if err != nil || gr.Error != "" {
				t.Errorf("LeaseGrant with %s: %v %v", what, gr, err)
			} else if owner := e.get(t, heOwnerKey(gr.ID)); owner == nil || string(owner.Value) != "spiffe://example.org/web" {
				t.Errorf("LeaseGrant with %s: owner record %v", what, owner)
			}
			if i%5 != 0 {
				continue // the streams for a few spellings only
			}
			// Streams carry the caller's metadata on their first frame.
			wctx, cancel := context.WithTimeout(with(s), 15*time.Second)
			ws, err := pb.NewWatchClient(e.web).Watch(wctx)
			if err == nil {
				err = ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}})
			}
			var created *pb.WatchResponse
			if err == nil {
				created, err = ws.Recv()
			}
			if err != nil || !created.Created || created.Canceled {
				t.Errorf("Watch with %s: %v %v", what, created, err)
			} else {
				e.put(t, key, "changed")
				ev, err := ws.Recv()
				if err != nil || len(ev.Events) != 1 || string(ev.Events[0].Kv.Value) != "changed" {
					t.Errorf("Watch with %s: event %v %v", what, ev, err)
				}
			}
			cancel()
			kctx, cancel := context.WithTimeout(with(s), 10*time.Second)
			ka, err := pb.NewLeaseClient(e.web).LeaseKeepAlive(kctx)
			if err == nil {
				err = ka.Send(&pb.LeaseKeepAliveRequest{ID: webLease})
			}
			var kr *pb.LeaseKeepAliveResponse
			if err == nil {
				kr, err = ka.Recv()
			}
			if err != nil || kr.TTL <= 0 {
				t.Errorf("LeaseKeepAlive with %s: %v %v", what, kr, err)
			}
			cancel()
			lk, err := v3lockpb.NewLockClient(e.web).Lock(with(s), &v3lockpb.LockRequest{Name: fmt.Appendf(nil, "/app/locks/c%02d", i), Lease: webLease})
			if err != nil {
				t.Errorf("Lock with %s: %v", what, err)
			} else if _, err := v3lockpb.NewLockClient(e.web).Unlock(with(s), &v3lockpb.UnlockRequest{Key: lk.Key}); err != nil {
				t.Errorf("Unlock with %s: %v", what, err)
			}
			var hdr2, tr2 metadata.MD
			if _, err := pb.NewMaintenanceClient(e.web).Status(with(s), &pb.StatusRequest{}, grpc.Header(&hdr2), grpc.Trailer(&tr2)); err != nil {
				t.Errorf("Status with %s: %v", what, err)
			}
			hecNoCreds(t, "Status with "+what, hdr2, tr2)
		}
		// The low user's token on admin's auth calls: answered as the
		// gateway's user (root), not refused as the low user would be.
		for _, s := range spellings[:10] {
			if _, err := pb.NewAuthClient(e.admin).UserList(with(s), &pb.AuthUserListRequest{}); err != nil {
				t.Errorf("admin UserList with %q: %q: %v", s.key, s.value, err)
			}
		}
	})

	t.Run("gateway credentials stay in the gateway", func(t *testing.T) {
		wa := pb.NewAuthClient(e.web)
		secrets := []string{hecPassword, hecUser, "ROOT-PASSW0RD"}
		type call struct {
			name string
			do   func(c pb.AuthClient, opts ...grpc.CallOption) (fmt.Stringer, error)
		}
		authn := func(name, pw string) func(c pb.AuthClient, opts ...grpc.CallOption) (fmt.Stringer, error) {
			return func(c pb.AuthClient, opts ...grpc.CallOption) (fmt.Stringer, error) {
				return c.Authenticate(heCtx(t), &pb.AuthenticateRequest{Name: name, Password: pw}, opts...)
			}
		}
		calls := []call{
			{"Authenticate as the gateway, right password", authn(hecUser, hecPassword)},
			{"Authenticate as the gateway, no password", authn(hecUser, "")},
			{"Authenticate as the gateway, wrong password", authn(hecUser, "guess")},
			{"Authenticate empty", authn("", "")},
			{"Authenticate, password only", authn("", hecPassword)},
			{"Authenticate as root, no password", authn("root", "")},
			{"Authenticate as the certificate's user", authn("storegate", "")},
			{"AuthStatus", func(c pb.AuthClient, opts ...grpc.CallOption) (fmt.Stringer, error) {
				return c.AuthStatus(heCtx(t), &pb.AuthStatusRequest{}, opts...)
			}},
			{"UserList", func(c pb.AuthClient, opts ...grpc.CallOption) (fmt.Stringer, error) {
				return c.UserList(heCtx(t), &pb.AuthUserListRequest{}, opts...)
			}},
			{"UserGet gateway", func(c pb.AuthClient, opts ...grpc.CallOption) (fmt.Stringer, error) {
				return c.UserGet(heCtx(t), &pb.AuthUserGetRequest{Name: hecUser}, opts...)
			}},
			{"RoleGet root", func(c pb.AuthClient, opts ...grpc.CallOption) (fmt.Stringer, error) {
				return c.RoleGet(heCtx(t), &pb.AuthRoleGetRequest{Role: "root"}, opts...)
			}},
			{"RoleList", func(c pb.AuthClient, opts ...grpc.CallOption) (fmt.Stringer, error) {
				return c.RoleList(heCtx(t), &pb.AuthRoleListRequest{}, opts...)
			}},
		}
		for _, c := range calls {
			var hdr, tr metadata.MD
			resp, err := c.do(wa, grpc.Header(&hdr), grpc.Trailer(&tr))
			heDenied(t, "web "+c.name, err)
			hecNoCreds(t, "web "+c.name, hdr, tr)
			heNoLeak(t, "web "+c.name, secrets, fmt.Sprint(err), fmt.Sprint(resp), heoMD(hdr), heoMD(tr))
		}
		// admin may administer etcd's auth: it gets etcd's own answer, no
		// more (no token it did not earn, no password).
		aa := pb.NewAuthClient(e.admin)
		da := pb.NewAuthClient(direct.ActiveConnection())
		for _, c := range calls {
			var hdr, tr metadata.MD
			resp, err := c.do(aa, grpc.Header(&hdr), grpc.Trailer(&tr))
			hecNoCreds(t, "admin "+c.name, hdr, tr)
			dresp, derr := c.do(da)
			got, want := hecStrip(resp, err), hecStrip(dresp, derr)
			if c.name == "Authenticate as the gateway, right password" {
				// admin knows the password: a token of its own, not the gateway's.
				if ar, ok := resp.(*pb.AuthenticateResponse); err != nil || !ok || ar.Token == "" {
					t.Errorf("admin %s: %v %v", c.name, resp, err)
				}
				continue
			}
			if got != want {
				t.Errorf("admin %s: %s; etcd answers its root: %s", c.name, got, want)
			}
			heNoLeak(t, "admin "+c.name, []string{hecPassword, "ROOT-PASSW0RD"}, got, heoMD(hdr), heoMD(tr))
			if ar, ok := resp.(*pb.AuthenticateResponse); ok && ar != nil && ar.Token != "" {
				t.Errorf("admin %s: a token %q", c.name, ar.Token)
			}
		}
		if strings.Contains(gw.logs.String(), hecPassword) {
			t.Errorf("the gateway's etcd password is in its logs")
		}
	})
}

// hecStrip is an answer without its header (revisions and member IDs
// differ between the gateway's connection and a direct one).
func hecStrip(resp fmt.Stringer, err error) string {
	if err != nil {
		return "err: " + err.Error()
	}
	m, ok := resp.(proto.Message)
	if !ok {
		return resp.String()
	}
	m = proto.Clone(m)
	if fd := m.ProtoReflect().Descriptor().Fields().ByName("header"); fd != nil {
		m.ProtoReflect().Clear(fd)
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		return "marshal: " + err.Error()
	}
	return string(b)
}
