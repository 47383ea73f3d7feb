package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hashicorp/consul/api"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
)

// refusedLoad sends what must be refused — ops policy denies, input the
// gateway or a plugin refuses — and checks in the stores that none of it
// landed.
type refusedLoad struct {
	f *fleet
	t *tally
	// etcd clients of web, reader and nobody; Consul clients of web and
	// nobody, and web's HTTP client for requests the API client cannot
	// make.
	web, reader, nobody *clientv3.Client
	cweb, cnobody       *api.Client
	hweb                *http.Client
}

// isEtcdDenied is etcd's own permission denied, as clients match it.
func isEtcdDenied(err error) bool {
	c, _ := etcdCode(err)
	return c == codes.PermissionDenied && strings.Contains(err.Error(), "etcdserver: permission denied")
}

// isConsulStatus is a Consul answer of the HTTP status code.
func isConsulStatus(err error, code int) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == code
}

// etcdRefused runs an etcd op that must be refused: denied when class is
// classDenied (etcd's permission denied), or refused with code otherwise.
func (l *refusedLoad) etcdRefused(kind, class string, code codes.Code, err error) {
	l.t.op(kind)
	switch {
	case err == nil:
		l.t.wrongf("%s: allowed, want it refused (%s)", kind, class)
	case class == classDenied && isEtcdDenied(err), class == classRefused && codeIs(err, code):
		l.t.expected(class)
	default:
		l.t.fail(kind, err)
	}
}

func codeIs(err error, code codes.Code) bool {
	c, ok := etcdCode(err)
	return ok && c == code
}

// consulRefused counts a Consul op that must be refused with code.
func (l *refusedLoad) consulRefused(kind, class string, code int, err error) {
	l.t.op(kind)
	switch {
	case err == nil:
		l.t.wrongf("%s: allowed, want it refused (%s)", kind, class)
	case isConsulStatus(err, code):
		l.t.expected(class)
	default:
		l.t.fail(kind, err)
	}
}

// etcdAbsent checks in etcd that no key under prefix exists.
func (l *refusedLoad) etcdAbsent(ctx context.Context, prefix string) {
	r, err := l.f.direct.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		l.t.fail("etcd direct get", err)
	} else if r.Count != 0 {
		l.t.wrongf("etcd store: %d keys under %s, which every write was refused", r.Count, prefix)
	}
}

// consulAbsent checks in the agent that no key under prefix exists.
func (l *refusedLoad) consulAbsent(ctx context.Context, prefix string) {
	ks, _, err := l.f.agent.KV().Keys(prefix, "", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		l.t.fail("consul direct keys", err)
	} else if len(ks) != 0 {
		l.t.wrongf("consul agent: keys %v under %s, which every write was refused", ks, prefix)
	}
}

// denied is one round of ops the policy denies: writes as nobody and as
// reader, web's writes and reads of /soak/secret/, nobody's Consul put and
// session; then the stores are checked.
func (l *refusedLoad) denied(ctx context.Context, i int) {
	k := fmt.Sprintf("%d", i)
	_, err := l.nobody.Put(ctx, "/soak/denied/nobody/"+k, "x")
	l.etcdRefused("etcd put (nobody)", classDenied, 0, err)
	_, err = l.nobody.Get(ctx, "/soak/kv/", clientv3.WithPrefix())
	l.etcdRefused("etcd range (nobody)", classDenied, 0, err)
	_, err = l.reader.Put(ctx, "/soak/denied/reader/"+k, "x")
	l.etcdRefused("etcd put (reader)", classDenied, 0, err)
	_, err = l.reader.Delete(ctx, "/soak/kv/", clientv3.WithPrefix())
	l.etcdRefused("etcd delete (reader)", classDenied, 0, err)
	_, err = l.web.Put(ctx, "/soak/secret/"+k, "x")
	l.etcdRefused("etcd put (web, secret)", classDenied, 0, err)
	_, err = l.web.Txn(ctx).Then(clientv3.OpPut("/soak/kv/w0/txn-"+k, "x"), clientv3.OpPut("/soak/secret/txn-"+k, "x")).Commit()
	l.etcdRefused("etcd txn (web, secret)", classDenied, 0, err)
	_, err = l.nobody.Grant(ctx, 10)
	l.etcdRefused("etcd lease grant (nobody)", classDenied, 0, err)
	_, err = l.cnobody.KV().Put(&api.KVPair{Key: "soak/denied/nobody/" + k, Value: []byte("x")}, (&api.WriteOptions{}).WithContext(ctx))
	l.consulRefused("consul put (nobody)", classDenied, http.StatusForbidden, err)
	_, _, err = l.cnobody.Session().Create(&api.SessionEntry{TTL: "30s"}, (&api.WriteOptions{}).WithContext(ctx))
	l.consulRefused("consul session create (nobody)", classDenied, http.StatusForbidden, err)
	_, err = l.cweb.KV().Put(&api.KVPair{Key: "soak/secret/" + k, Value: []byte("x")}, (&api.WriteOptions{}).WithContext(ctx))
	l.consulRefused("consul put (web, secret)", classDenied, http.StatusForbidden, err)
	l.etcdAbsent(ctx, "/soak/denied/")
	l.etcdAbsent(ctx, "/soak/secret/")
	l.etcdAbsent(ctx, "/soak/kv/w0/txn-")
	l.consulAbsent(ctx, "soak/denied/")
	l.consulAbsent(ctx, "soak/secret/")
}

// badInput is one round of input that is refused: a value over the limits
// plugin's size, a key outside its charset, a Txn with an empty op; on
// Consul an oversized value, conflicting flags (?cas with ?acquire), a
// non-numeric ?flags and a query that does not parse.
func (l *refusedLoad) badInput(ctx context.Context, i int) {
	big := strings.Repeat("b", maxValue+1)
	_, err := l.web.Put(ctx, fmt.Sprintf("/soak/bad/big-%d", i), big)
	l.etcdRefused("etcd put (oversized)", classRefused, codes.PermissionDenied, err)
	_, err = l.web.Put(ctx, fmt.Sprintf("/soak/bad/key %d!", i), "x")
	l.etcdRefused("etcd put (bad key)", classRefused, codes.PermissionDenied, err)
	_, err = pb.NewKVClient(l.web.ActiveConnection()).Txn(ctx, emptyOpTxn)
	l.etcdRefused("etcd txn (empty op)", classRefused, codes.InvalidArgument, err)
	_, err = l.cweb.KV().Put(&api.KVPair{Key: fmt.Sprintf("soak/bad/big-%d", i), Value: []byte(big)}, (&api.WriteOptions{}).WithContext(ctx))
	l.consulRefused("consul put (oversized)", classRefused, http.StatusForbidden, err)
	l.consulRefused("consul put (cas and acquire)", classRefused, http.StatusBadRequest,
		l.rawPut(ctx, fmt.Sprintf("/v1/kv/soak/bad/cas-%d?cas=0&acquire=00000000-0000-0000-0000-000000000000", i), "x"))
	l.consulRefused("consul put (bad flags)", classRefused, http.StatusBadRequest, l.rawPut(ctx, fmt.Sprintf("/v1/kv/soak/bad/flags-%d?flags=-1", i), "x"))
	l.consulRefused("consul put (bad query)", classRefused, http.StatusBadRequest, l.rawPut(ctx, fmt.Sprintf("/v1/kv/soak/bad/query-%d?cas=%%zz", i), "x"))
	l.etcdAbsent(ctx, "/soak/bad/")
	l.consulAbsent(ctx, "soak/bad/")
}

// rawPut is a PUT of body to path on the Consul frontend as web, its
// answer as the API client reports it.
func (l *refusedLoad) rawPut(ctx context.Context, path, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "https://"+l.f.lb.Addrs["consul"]+path, bytes.NewReader([]byte(body)))
	if err != nil {
		return err
	}
	resp, err := l.hweb.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return api.StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return nil
}
