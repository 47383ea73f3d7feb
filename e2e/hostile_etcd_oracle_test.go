package e2e

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// heoGeneric is the only reason a caller is told for a denial caused by an
// op the gateway derived (gate's genericReason).
const heoGeneric = "the request touches what the caller may not use"

// heoCall is what a caller learns from one unary call: the error, the
// storegate-reason trailer, every header and trailer.
type heoCall struct {
	err     error
	hdr, tr metadata.MD
}

func (c *heoCall) opts() []grpc.CallOption {
	return []grpc.CallOption{grpc.Header(&c.hdr), grpc.Trailer(&c.tr)}
}
func (c *heoCall) reason() string { return strings.Join(c.tr.Get("storegate-reason"), "; ") }

// seen is everything the caller saw but the response body, with key (the
// one the caller named itself) replaced by KEY, so that answers about
// different keys compare.
func (c *heoCall) seen(key string) string {
	s := fmt.Sprintf("err=%v reason=%q hdr=%v", c.err, c.reason(), heoMD(c.hdr))
	if key != "" {
		s = strings.ReplaceAll(s, strconv.Quote(key), "KEY")
		s = strings.ReplaceAll(s, key, "KEY")
	}
	return s
}

// heoMD is md without the transport's own headers (content-type, date),
// in a stable order.
func heoMD(md metadata.MD) string {
	var parts []string
	for k, v := range md {
		if k == "content-type" || k == "date" {
			continue
		}
		parts = append(parts, k+"="+strings.Join(v, ","))
	}
	for i := range parts {
		for j := i + 1; j < len(parts); j++ {
			if parts[j] < parts[i] {
				parts[i], parts[j] = parts[j], parts[i]
			}
		}
	}
	return strings.Join(parts, " ")
}

// heoAnswer is a range answer without its header: what the caller reads.
func heoAnswer(r *pb.RangeResponse) string {
	if r == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "count=%d more=%v", r.Count, r.More)
	for _, kv := range r.Kvs {
		fmt.Fprintf(&b, " %q=%q(c%d m%d v%d l%x)", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
	}
	return b.String()
}

// TestHostileEtcdOracles: class 7, oracles. A denial caused by a derived
// op (another's lease, keys on a lease the caller may not touch) says only
// the generic reason and names no key, owner or value; a missing lease and
// another's answer alike; filtered ranges answer exactly what web may read
// and the same however many hidden keys there are, whatever the limit,
// count_only, keys_only, sort and revision bounds; an unreadable key
// answers alike whether it exists or not; member lists show no member's
// own URLs.
func TestHostileEtcdOracles(t *testing.T) {
	e := newHeEnv(t, heShipped(t)+heOpsIntention)
	webKV := pb.NewKVClient(e.web)
	webLease := pb.NewLeaseClient(e.web)

	t.Run("derived denials", func(t *testing.T) {
		adminLease := heGrant(t, e.admin, 120)
		myLease := heGrant(t, e.web, 120) // web's own, but admin hangs a secret on it
		cleanLease := heGrant(t, e.web, 120)
		adm := pb.NewKVClient(e.admin)
		for _, p := range []struct {
			k, v  string
			lease int64
		}{
			{"/app/secret/on-admin-lease", "SECRET-ADMIN-LEASE-VALUE", adminLease},
			{"/app/secret/on-web-lease", "SECRET-WEB-LEASE-VALUE", myLease},
			{"/app/visible-on-web-lease", "visible", myLease},
		} {
			if _, err := adm.Put(heCtx(t), &pb.PutRequest{Key: []byte(p.k), Value: []byte(p.v), Lease: p.lease}); err != nil {
				t.Fatalf("admin puts %q on lease %x: %v", p.k, p.lease, err)
			}
		}
		secrets := []string{"spiffe://example.org/admin", "/app/secret/on-admin-lease", "/app/secret/on-web-lease",
			"SECRET-ADMIN-LEASE-VALUE", "SECRET-WEB-LEASE-VALUE", "/_storegate", "/app/secret/", fmt.Sprintf("%016x", uint64(adminLease))}
		rev0 := e.rev(t)

		check := func(t *testing.T, what string, c *heoCall, body string) {
			t.Helper()
			heDenied(t, what, c.err)
			if got := c.reason(); got != heoGeneric {
				t.Errorf("%s: storegate-reason %q, want only %q", what, got, heoGeneric)
			}
			heNoLeak(t, what, secrets, fmt.Sprint(c.err), heoMD(c.hdr), heoMD(c.tr), body)
		}
		for _, l := range []struct {
			name string
			id   int64
		}{{"admin's lease", adminLease}, {"web's lease holding a secret", myLease}} {
			for i, k := range []string{"/app/o/x", "/app/o/\xff", "/app/o/" + strings.Repeat("y", 300)} {
				var c heoCall
				_, c.err = webKV.Put(heCtx(t), &pb.PutRequest{Key: []byte(k), Value: []byte("w"), Lease: l.id, PrevKv: i == 1}, c.opts()...)
				check(t, fmt.Sprintf("Put %q on %s", k, l.name), &c, "")
			}
			var c heoCall
			_, c.err = webKV.Txn(heCtx(t), heNest(3, heOpPut("/app/o/nested", "w", l.id), false), c.opts()...)
			check(t, "nested txn put on "+l.name, &c, "")
			c = heoCall{}
			_, c.err = webKV.Txn(heCtx(t), heNest(2, heOpPut("/app/o/nested", "w", l.id), true), c.opts()...)
			check(t, "txn put on "+l.name+" in a branch that will not run", &c, "")
			c = heoCall{}
			_, c.err = webLease.LeaseRevoke(heCtx(t), &pb.LeaseRevokeRequest{ID: l.id}, c.opts()...)
			check(t, "LeaseRevoke of "+l.name, &c, "")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			c = heoCall{}
			_, c.err = v3lockpb.NewLockClient(e.web).Lock(ctx, &v3lockpb.LockRequest{Name: []byte("/app/locks/oracle"), Lease: l.id}, c.opts()...)
			cancel()
			// A lock's key goes on the lease too: judged as an attachment.
			check(t, "Lock with "+l.name, &c, "")
		}
		for _, keys := range []bool{false, true} {
			var c heoCall
			var resp *pb.LeaseTimeToLiveResponse
			resp, c.err = webLease.LeaseTimeToLive(heCtx(t), &pb.LeaseTimeToLiveRequest{ID: adminLease, Keys: keys}, c.opts()...)
			check(t, fmt.Sprintf("LeaseTimeToLive admin's keys=%v", keys), &c, fmt.Sprint(resp))
			// Its own lease: allowed, but the keys it may not read are not listed.
			c = heoCall{}
			resp, c.err = webLease.LeaseTimeToLive(heCtx(t), &pb.LeaseTimeToLiveRequest{ID: myLease, Keys: keys}, c.opts()...)
			if c.err != nil {
				t.Errorf("LeaseTimeToLive of web's own lease: %v", c.err)
				continue
			}
			heNoLeak(t, "LeaseTimeToLive of web's own lease", secrets, resp.String(), heoMD(c.hdr), heoMD(c.tr))
			if keys && (len(resp.Keys) != 1 || string(resp.Keys[0]) != "/app/visible-on-web-lease") {
				t.Errorf("LeaseTimeToLive of web's own lease: keys %q, want only the one web may read", resp.Keys)
			}
		}
		// Keep-alive of admin's lease: TTL 0, nothing else said.
		if ttl := heKeepAlive(t, e.web, adminLease); ttl != 0 {
			t.Errorf("keep-alive of admin's lease through web: ttl %d", ttl)
		}
		// Control: web's clean lease still takes keys.
		if _, err := webKV.Put(heCtx(t), &pb.PutRequest{Key: []byte("/app/o/clean"), Value: []byte("w"), Lease: cleanLease}); err != nil {
			t.Errorf("put on web's clean lease: %v", err)
		}
		// Nothing happened in etcd but that control put.
		if rev := e.rev(t); rev != rev0+1 {
			t.Errorf("etcd's revision %d -> %d: a denied request wrote", rev0, rev)
		}
		for _, id := range []int64{adminLease, myLease} {
			if left, _, keys := e.ttl(t, id); left <= 0 || len(keys) < 2 {
				t.Errorf("lease %x after web's attacks: ttl %d keys %q", id, left, keys)
			}
		}
		for k, kv := range e.all(t) {
			if strings.HasPrefix(k, "/app/o/") && k != "/app/o/clean" || strings.HasPrefix(k, "/app/n/") || strings.HasPrefix(k, "/app/locks/oracle") {
				t.Errorf("%q in etcd after denied requests (lease %x)", k, kv.Lease)
			}
		}
	})

	t.Run("missing lease looks like another's", func(t *testing.T) {
		adminLease := heGrant(t, e.admin, 120)
		if _, err := pb.NewKVClient(e.admin).Put(heCtx(t), &pb.PutRequest{Key: []byte("/app/secret/mlk"), Value: []byte("SECRET-MLK"), Lease: adminLease}); err != nil {
			t.Fatal(err)
		}
		bareAdmin := heGrant(t, e.admin, 120)
		revoked := heGrant(t, e.admin, 120)
		if _, err := pb.NewLeaseClient(e.admin).LeaseRevoke(heCtx(t), &pb.LeaseRevokeRequest{ID: revoked}); err != nil {
			t.Fatal(err)
		}
		dl, err := e.direct.Grant(heCtx(t), 120)
		if err != nil {
			t.Fatal(err)
		}
		e.put(t, "/other/on-direct", "SECRET-DIRECT", clientv3.WithLease(dl.ID))
		ids := []struct {
			name string
			id   int64
		}{
			{"admin's with a secret key", adminLease}, {"admin's bare", bareAdmin}, {"admin's revoked", revoked},
			{"direct", int64(dl.ID)}, {"never granted", 0x0bad0bad0bad}, {"next to admin's", adminLease ^ 1}, {"-7", -7},
		}
		secrets := []string{"spiffe://example.org/admin", "/app/secret/mlk", "SECRET-MLK", "/other/on-direct", "SECRET-DIRECT", "not found"}
		ops := []struct {
			name string
			do   func(id int64, c *heoCall) string
		}{
			{"Put", func(id int64, c *heoCall) string {
				_, c.err = webKV.Put(heCtx(t), &pb.PutRequest{Key: []byte("/app/o/ml"), Value: []byte("w"), Lease: id}, c.opts()...)
				return ""
			}},
			{"Txn put", func(id int64, c *heoCall) string {
				_, c.err = webKV.Txn(heCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{heOpPut("/app/o/ml", "w", id)}}, c.opts()...)
				return ""
			}},
			{"LeaseRevoke", func(id int64, c *heoCall) string {
				r, err := webLease.LeaseRevoke(heCtx(t), &pb.LeaseRevokeRequest{ID: id}, c.opts()...)
				c.err = err
				return fmt.Sprint(r)
			}},
			{"LeaseTimeToLive", func(id int64, c *heoCall) string {
				r, err := webLease.LeaseTimeToLive(heCtx(t), &pb.LeaseTimeToLiveRequest{ID: id}, c.opts()...)
				c.err = err
				return fmt.Sprint(r)
			}},
			{"LeaseTimeToLive keys", func(id int64, c *heoCall) string {
				r, err := webLease.LeaseTimeToLive(heCtx(t), &pb.LeaseTimeToLiveRequest{ID: id, Keys: true}, c.opts()...)
				c.err = err
				return fmt.Sprint(r)
			}},
			{"keep-alive", func(id int64, c *heoCall) string {
				return fmt.Sprintf("ttl=%d", heKeepAlive(t, e.web, id))
			}},
		}
		for _, op := range ops {
			var first string
			for i, l := range ids {
				var c heoCall
				body := op.do(l.id, &c)
				got := c.seen("") + " body=" + body
				got = strings.ReplaceAll(got, strconv.FormatInt(l.id, 10), "ID")
				heNoLeak(t, op.name+" "+l.name, secrets, got, heoMD(c.tr))
				if i == 0 {
					first = got
					continue
				}
				if got != first {
					t.Errorf("%s answers differ: %s lease: %s; %s lease: %s", op.name, ids[0].name, first, l.name, got)
				}
			}
		}
		if kv := e.get(t, "/app/o/ml"); kv != nil {
			t.Errorf("/app/o/ml written in etcd on lease %x", kv.Lease)
		}
		for _, id := range []int64{adminLease, bareAdmin, int64(dl.ID)} {
			if left, _, _ := e.ttl(t, id); left <= 0 {
				t.Errorf("lease %x gone after web's attacks", id)
			}
		}
	})

	// Filtered ranges. Readable and hidden keys interleave in key order and
	// in revision order; readable ones have distinct values and versions
	// (so that any sort puts them in one order whatever hidden keys sit
	// among them: etcd's sort is not stable, so readable keys that tie
	// could come back in an order that depends on hidden keys).
	readable := []string{"/shared/k0", "/shared/k1", "/shared/k2", "/shared/k3", "/shared/k4", "/app/sa", "/app/secret", "/app/secret\xff", "/app/secretz", "/app/sz"}
	hidden := []string{"/shared/k0/h", "/shared/k1/h/i", "/shared/k3/h", "/shared/zz/h", "/app/secret/h0", "/app/secret/h1", "/app/secret/\x00", "/app/secret/\xff", "/appz/h", "/other/h"}
	for _, k := range readable {
		if !webReadable(k) {
			t.Fatalf("%q is not readable by web", k)
		}
	}
	for _, k := range hidden {
		if webReadable(k) {
			t.Fatalf("%q is readable by web", k)
		}
	}
	var revs []int64
	for i := range readable {
		for v := 0; v <= i+1; v++ { // versions 2.. and distinct: no ties in a sort by version
			revs = append(revs, e.put(t, readable[i], fmt.Sprintf("val-%c-%d", 'j'-i, v)).Header.Revision)
		}
		e.put(t, hidden[i], fmt.Sprintf("HIDDEN-%d", i))
	}
	mid := revs[len(revs)/2]
	early := revs[3]

	type rangeCase struct{ name, key, end string }
	ranges := []rangeCase{
		{"/shared/ prefix", "/shared/", "/shared0"},
		{"/app/s..", "/app/s", "/app/t"},
		{"from /app/s on", "/app/s", "\x00"},
		{"/shared/k1 .. /shared/k4", "/shared/k1", "/shared/k4"},
	}
	type variant struct {
		name string
		mod  func(*pb.RangeRequest)
	}
	var variants []variant
	for _, lim := range []int64{0, 1, 2, 3, 100} {
		variants = append(variants,
			variant{fmt.Sprintf("limit %d", lim), func(r *pb.RangeRequest) { r.Limit = lim }},
			variant{fmt.Sprintf("count only, limit %d", lim), func(r *pb.RangeRequest) { r.CountOnly, r.Limit = true, lim }},
			variant{fmt.Sprintf("keys only, limit %d", lim), func(r *pb.RangeRequest) { r.KeysOnly, r.Limit = true, lim }})
	}
	for _, tg := range []pb.RangeRequest_SortTarget{pb.RangeRequest_KEY, pb.RangeRequest_VERSION, pb.RangeRequest_CREATE, pb.RangeRequest_MOD, pb.RangeRequest_VALUE} {
		for _, o := range []pb.RangeRequest_SortOrder{pb.RangeRequest_NONE, pb.RangeRequest_ASCEND, pb.RangeRequest_DESCEND} {
			for _, lim := range []int64{0, 2} {
				variants = append(variants, variant{fmt.Sprintf("sort %v %v limit %d", tg, o, lim), func(r *pb.RangeRequest) {
					r.SortTarget, r.SortOrder, r.Limit = tg, o, lim
				}})
			}
		}
	}
	variants = append(variants,
		variant{"min mod rev", func(r *pb.RangeRequest) { r.MinModRevision = mid }},
		variant{"max mod rev, limit 1", func(r *pb.RangeRequest) { r.MaxModRevision, r.Limit = mid, 1 }},
		variant{"min create rev, count only", func(r *pb.RangeRequest) { r.MinCreateRevision, r.CountOnly = mid, true }},
		variant{"max create rev, desc by mod", func(r *pb.RangeRequest) {
			r.MaxCreateRevision, r.SortTarget, r.SortOrder = mid, pb.RangeRequest_MOD, pb.RangeRequest_DESCEND
		}},
		variant{"mod rev window, limit 2", func(r *pb.RangeRequest) { r.MinModRevision, r.MaxModRevision, r.Limit = early, mid, 2 }},
		variant{"at an early revision", func(r *pb.RangeRequest) { r.Revision = early }},
		variant{"at a middle revision, limit 2", func(r *pb.RangeRequest) { r.Revision, r.Limit = mid, 2 }},
		variant{"at a middle revision, count only", func(r *pb.RangeRequest) { r.Revision, r.CountOnly = mid, true }},
		variant{"serializable, limit 1, desc by key", func(r *pb.RangeRequest) {
			r.Serializable, r.Limit, r.SortOrder = true, 1, pb.RangeRequest_DESCEND
		}},
	)
	direct := pb.NewKVClient(e.direct.ActiveConnection())
	// want is what web may see of r: etcd's own answer to r without limit,
	// narrowed to what web may read, the limit applied after.
	want := func(t *testing.T, r *pb.RangeRequest) (*pb.RangeResponse, bool) {
		whole := proto.Clone(r).(*pb.RangeRequest)
		whole.Limit = 0
		if whole.CountOnly {
			whole.CountOnly, whole.KeysOnly = false, true
		}
		d, err := direct.Range(heCtx(t), whole)
		if err != nil {
			t.Fatalf("direct range %v: %v", whole, err)
		}
		out := &pb.RangeResponse{}
		for _, kv := range d.Kvs {
			if webReadable(string(kv.Key)) {
				out.Kvs = append(out.Kvs, kv)
			}
		}
		out.Count = int64(len(out.Kvs))
		limited := r.Limit > 0 && out.Count > r.Limit
		switch {
		case r.CountOnly:
			out.Kvs = nil
		case limited:
			out.Kvs, out.More = out.Kvs[:r.Limit], true
		}
		return out, limited
	}
	// answers runs every range and variant as a Range and inside a Txn,
	// checks each against want and returns them by name.
	answers := func(t *testing.T) map[string]string {
		got := map[string]string{}
		for _, rg := range ranges {
			for _, v := range variants {
				r := &pb.RangeRequest{Key: []byte(rg.key), RangeEnd: []byte(rg.end)}
				v.mod(r)
				what := fmt.Sprintf("[%q,%q) %s", rg.key, rg.end, v.name)
				var c heoCall
				resp, err := webKV.Range(heCtx(t), r, c.opts()...)
				if err != nil {
					t.Errorf("Range %s: %v", what, err)
					continue
				}
				w, limited := want(t, r)
				a, b := heoAnswer(resp), heoAnswer(w)
				if r.CountOnly && resp.More && limited {
					a = strings.Replace(a, "more=true", "more=false", 1) // etcd's count_only says more=false; either reveals nothing
				}
				if a != b {
					t.Errorf("Range %s:\n got  %s\n want %s (what web may read, from etcd)", what, a, b)
				}
				heNoLeak(t, "Range "+what, heoHiddenValues(hidden), a, heoMD(c.hdr), heoMD(c.tr))
				got["range "+what] = a
				tr, err := webKV.Txn(heCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: proto.Clone(r).(*pb.RangeRequest)}}}})
				if err != nil {
					t.Errorf("Txn range %s: %v", what, err)
					continue
				}
				ta := heoAnswer(tr.Responses[0].GetResponseRange())
				if ta != a {
					t.Errorf("Txn range %s:\n got  %s\n Range answered %s", what, ta, a)
				}
				got["txn "+what] = ta
			}
		}
		return got
	}
	t.Run("filtered ranges", func(t *testing.T) {
		before := answers(t)
		// More hidden keys, in every gap; one hidden key gone, one
		// rewritten: web's answers must not move.
		more := []string{"/shared/k0/h2", "/shared/k2/h", "/shared/k2/h/deeper", "/shared/k4/h", "/shared/\x00/h", "/app/secret/h2", "/app/secret/h3", "/app/secret/zz", "/appz/h2", "/other/h2", "/zzz"}
		for i, k := range more {
			if webReadable(k) {
				t.Fatalf("%q is readable by web", k)
			}
			e.put(t, k, fmt.Sprintf("HIDDEN-MORE-%d", i))
		}
		if _, err := e.direct.Delete(heCtx(t), "/shared/zz/h"); err != nil {
			t.Fatal(err)
		}
		e.put(t, "/app/secret/h0", "HIDDEN-REWRITTEN")
		after := answers(t)
		for k, a := range before {
			if after[k] != a {
				t.Errorf("%s: the answer changed when only hidden keys did:\n before %s\n after  %s", k, a, after[k])
			}
		}
	})

	t.Run("denied vs nonexistent", func(t *testing.T) {
		e.put(t, "/app/secret/was", "SECRET-WAS")
		wasRev := e.rev(t)
		if _, err := e.direct.Delete(heCtx(t), "/app/secret/was"); err != nil {
			t.Fatal(err)
		}
		e.put(t, "/app/secret/o1", "SECRET-O1")
		e.put(t, "/other/o1", "SECRET-OTHER-O1")
		pairs := [][2]string{ // an existing key, then one that does not exist
			{"/app/secret/o1", "/app/secret/o9"},
			{"/app/secret/h1", "/app/secret/zq"},
			{"/shared/k0/h", "/shared/k0/q"},
			{"/other/o1", "/other/o9"},
			{"/app/secret/was", "/app/secret/wa"}, // existed until just now
			{"/appz/h", "/appz/q"},
		}
		secrets := append(heoHiddenValues(hidden), "SECRET-O1", "SECRET-OTHER-O1", "SECRET-WAS")
		probes := []struct {
			name string
			do   func(k string, c *heoCall)
		}{
			{"Range", func(k string, c *heoCall) {
				_, c.err = webKV.Range(heCtx(t), &pb.RangeRequest{Key: []byte(k)}, c.opts()...)
			}},
			{"Range count only", func(k string, c *heoCall) {
				_, c.err = webKV.Range(heCtx(t), &pb.RangeRequest{Key: []byte(k), CountOnly: true}, c.opts()...)
			}},
			{"Range keys only, serializable", func(k string, c *heoCall) {
				_, c.err = webKV.Range(heCtx(t), &pb.RangeRequest{Key: []byte(k), KeysOnly: true, Serializable: true}, c.opts()...)
			}},
			{"Range at an old revision", func(k string, c *heoCall) {
				_, c.err = webKV.Range(heCtx(t), &pb.RangeRequest{Key: []byte(k), Revision: wasRev}, c.opts()...)
			}},
			{"Range with a revision from the future", func(k string, c *heoCall) {
				_, c.err = webKV.Range(heCtx(t), &pb.RangeRequest{Key: []byte(k), Revision: wasRev + 1000000}, c.opts()...)
			}},
			{"Put prev_kv", func(k string, c *heoCall) {
				_, c.err = webKV.Put(heCtx(t), &pb.PutRequest{Key: []byte(k), Value: []byte("w"), PrevKv: true}, c.opts()...)
			}},
			{"Put ignore_value", func(k string, c *heoCall) {
				_, c.err = webKV.Put(heCtx(t), &pb.PutRequest{Key: []byte(k), IgnoreValue: true}, c.opts()...)
			}},
			{"DeleteRange", func(k string, c *heoCall) {
				_, c.err = webKV.DeleteRange(heCtx(t), &pb.DeleteRangeRequest{Key: []byte(k)}, c.opts()...)
			}},
			{"Txn compare version", func(k string, c *heoCall) {
				_, c.err = webKV.Txn(heCtx(t), &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte(k), Target: pb.Compare_VERSION,
					Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}}, Success: []*pb.RequestOp{heOpPut("/app/o/cmp", "w", 0)}}, c.opts()...)
			}},
			{"Txn compare value", func(k string, c *heoCall) {
				_, c.err = webKV.Txn(heCtx(t), &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte(k), Target: pb.Compare_VALUE,
					Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("SECRET-O1")}}}, Failure: []*pb.RequestOp{heOpPut("/app/o/cmp", "w", 0)}}, c.opts()...)
			}},
			{"Txn range op", func(k string, c *heoCall) {
				_, c.err = webKV.Txn(heCtx(t), &pb.TxnRequest{Success: []*pb.RequestOp{heOpGet(k, "")}}, c.opts()...)
			}},
		}
		rev0 := e.rev(t)
		for _, pr := range pairs {
			for _, p := range probes {
				var a, b heoCall
				p.do(pr[0], &a)
				p.do(pr[1], &b)
				heDenied(t, fmt.Sprintf("%s %q", p.name, pr[0]), a.err)
				sa, sb := a.seen(pr[0]), b.seen(pr[1])
				if sa != sb {
					t.Errorf("%s: existing %q and missing %q answer differently:\n %s\n %s", p.name, pr[0], pr[1], sa, sb)
				}
				heNoLeak(t, p.name, secrets, sa, heoMD(a.tr), heoMD(b.tr))
			}
			// A watch: same cancel for both.
			var reasons [2]string
			for i, k := range pr {
				w := heOpenWatch(t, e.web)
				w.create(t, &pb.WatchCreateRequest{Key: []byte(k), PrevKv: true, StartRevision: 1})
				got := w.until(t, 10*time.Second, func(r *pb.WatchResponse) bool { return r.Created || r.Canceled })
				last := got[len(got)-1]
				reasons[i] = fmt.Sprintf("created=%v canceled=%v reason=%q events=%d", last.Created, last.Canceled, last.CancelReason, len(last.Events))
				w.stop()
			}
			if reasons[0] != reasons[1] {
				t.Errorf("Watch: existing %q and missing %q answer differently: %s / %s", pr[0], pr[1], reasons[0], reasons[1])
			}
			if !strings.Contains(reasons[0], "canceled=true") {
				t.Errorf("Watch %q: %s, want canceled", pr[0], reasons[0])
			}
		}
		if rev := e.rev(t); rev != rev0 {
			t.Errorf("etcd's revision %d -> %d after denied probes", rev0, rev)
		}
		if kv := e.get(t, "/app/secret/o1"); kv == nil || string(kv.Value) != "SECRET-O1" {
			t.Errorf("/app/secret/o1 in etcd: %v", kv)
		}
	})

	t.Run("member list", func(t *testing.T) {
		var etcdHosts []string
		for _, m := range e.ec.Members {
			for _, raw := range []string{m.ClientURL, m.PeerURL} {
				u, err := url.Parse(raw)
				if err != nil {
					t.Fatal(err)
				}
				etcdHosts = append(etcdHosts, u.Host)
			}
		}
		ops := heConn(t, e.p, e.gw.addr, "ops")
		for _, lin := range []bool{false, true} {
			var c heoCall
			resp, err := pb.NewClusterClient(ops).MemberList(heCtx(t), &pb.MemberListRequest{Linearizable: lin}, c.opts()...)
			if err != nil {
				t.Fatalf("ops MemberList: %v", err)
			}
			heNoLeak(t, "ops MemberList", etcdHosts, resp.String(), heoMD(c.hdr), heoMD(c.tr))
			if len(resp.Members) != len(e.ec.Members) {
				t.Errorf("ops MemberList: %d members, etcd has %d", len(resp.Members), len(e.ec.Members))
			}
			for _, m := range resp.Members {
				if len(m.PeerURLs) != 0 {
					t.Errorf("ops sees member %x's peer URLs %q", m.ID, m.PeerURLs)
				}
				if len(m.ClientURLs) != 1 || m.ClientURLs[0] != "https://"+e.gw.addr {
					t.Errorf("ops sees member %x's client URLs %q, want only the gateway's", m.ID, m.ClientURLs)
				}
			}
		}
		// web may not read the membership at all; admin may, peers included.
		var c heoCall
		_, c.err = pb.NewClusterClient(e.web).MemberList(heCtx(t), &pb.MemberListRequest{}, c.opts()...)
		heDenied(t, "web MemberList", c.err)
		heNoLeak(t, "web MemberList", etcdHosts, c.seen(""))
		resp, err := pb.NewClusterClient(e.admin).MemberList(heCtx(t), &pb.MemberListRequest{})
		if err != nil || len(resp.Members) == 0 || len(resp.Members[0].PeerURLs) == 0 {
			t.Errorf("admin MemberList: %v %v", resp, err)
		} else {
			heNoLeak(t, "admin MemberList client URLs", etcdHosts, strings.Join(resp.Members[0].ClientURLs, " "))
		}
		// Status through the gateway names no member address either.
		st, err := pb.NewMaintenanceClient(e.web).Status(heCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Errorf("web Status: %v", err)
		} else {
			heNoLeak(t, "web Status", etcdHosts, st.String())
		}
		// An etcd-style per-member route to an unknown member says nothing
		// about which members exist beyond the member list.
		ctx := metadata.AppendToOutgoingContext(heCtx(t), "storegate-member", "deadbeef")
		_, err = pb.NewMaintenanceClient(e.web).Status(ctx, &pb.StatusRequest{})
		heNoLeak(t, "web Status of an unknown member", etcdHosts, fmt.Sprint(err))
	})
}

// heoHiddenValues are the values the oracle test seeds under hidden keys.
func heoHiddenValues(hidden []string) []string {
	out := []string{"HIDDEN-REWRITTEN"}
	for i := range hidden {
		out = append(out, fmt.Sprintf("HIDDEN-%d", i))
	}
	for i := range 11 {
		out = append(out, fmt.Sprintf("HIDDEN-MORE-%d", i))
	}
	return out
}
