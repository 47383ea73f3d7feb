package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/storegate/storegate/internal/testenv"
)

// dropSlack is what a dead replica may take beyond its TTL to leave every
// replica's MemberList: etcd's lessor revokes expired leases on a 500ms
// tick, the delete reaches the other replicas' watches, and this machine
// is shared by race-built processes.
const dropSlack = 3 * time.Second

// TestFleetDiscovery proves the fleet is discoverable through the
// balancer: MemberList lists exactly the live replicas' URLs and no etcd
// URL (members keeping etcd's IDs and names); a replica killed with -9
// leaves every other replica's list within its TTL plus dropSlack and
// comes back when restarted; etcdctl --cluster endpoint status and health
// reach each gateway once and never etcd; client/v3's Sync ends with the
// replicas' URLs as its endpoints.
func TestFleetDiscovery(t *testing.T) {
	f := startFleet(t)
	all := f.urls(0, 1, 2)

	t.Run("member list", func(t *testing.T) {
		if err := f.wantMembers(ctx(t), f.lbEndpoint(), all); err != nil {
			t.Fatal(err)
		}
		got, err := f.memberURLs(ctx(t), f.lbEndpoint())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, all) {
			t.Fatalf("client URLs %q, want each replica once: %q", got, all)
		}
		// IDs and names are etcd's.
		r, err := f.client(t, "web", f.lbEndpoint()).MemberList(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		d, err := f.direct(t).MemberList(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Members) != len(d.Members) {
			t.Fatalf("%d members through the fleet, etcd has %d", len(r.Members), len(d.Members))
		}
		for i, m := range r.Members {
			if m.ID != d.Members[i].ID || m.Name != d.Members[i].Name {
				t.Errorf("member %d: %x %s, etcd's %x %s", i, m.ID, m.Name, d.Members[i].ID, d.Members[i].Name)
			}
		}
	})

	t.Run("etcdctl --cluster", func(t *testing.T) {
		for _, cmd := range [][]string{{"endpoint", "status", "--cluster"}, {"endpoint", "health", "--cluster"}} {
			out := f.etcdctl(t, append(cmd, "-w", "json")...)
			var rows []struct {
				Endpoint string `json:"Endpoint"`
				Ep       string `json:"endpoint"`
				Health   *bool  `json:"health"`
				Status   *struct {
					Header struct {
						MemberID uint64 `json:"member_id"`
					} `json:"header"`
				} `json:"Status"`
			}
			if err := json.Unmarshal(out, &rows); err != nil {
				t.Fatalf("%v: %v\n%s", cmd, err, out)
			}
			var eps []string
			for _, r := range rows {
				ep := r.Endpoint + r.Ep
				eps = append(eps, ep)
				if r.Health != nil && !*r.Health {
					t.Errorf("%v: %s unhealthy", cmd, ep)
				}
				if r.Status != nil && r.Status.Header.MemberID == 0 {
					t.Errorf("%v: %s answered no member", cmd, ep)
				}
			}
			slices.Sort(eps)
			if !slices.Equal(eps, all) {
				t.Errorf("%v reached %q, want each gateway once: %q", cmd, eps, all)
			}
		}
	})

	t.Run("client/v3 Sync", func(t *testing.T) {
		c := f.client(t, "web", f.lbEndpoint())
		if err := c.Sync(ctx(t)); err != nil {
			t.Fatal(err)
		}
		eps := slices.Clone(c.Endpoints())
		slices.Sort(eps)
		if !slices.Equal(eps, all) {
			t.Fatalf("endpoints after Sync %q, want %q", eps, all)
		}
		if _, err := c.Put(ctx(t), "/fleet/sync", "1"); err != nil {
			t.Fatalf("put over the synced endpoints: %v", err)
		}
	})

	t.Run("kill -9 and restart", func(t *testing.T) {
		f.gws[1].Proc.Kill()
		killed := time.Now()
		left := f.urls(0, 2)
		f.env.Eventually(fleetTTL+dropSlack+10*time.Second, func(ctx context.Context) error {
			for _, i := range []int{0, 2} {
				if err := f.wantMembers(ctx, f.gwEndpoint(i), left); err != nil {
					return err
				}
			}
			return nil
		})
		took := time.Since(killed)
		t.Logf("the killed replica left every MemberList after %v (TTL %v)", took, fleetTTL)
		if took > fleetTTL+dropSlack {
			t.Errorf("the killed replica left after %v, over its TTL %v + %v", took, fleetTTL, dropSlack)
		}
		f.env.Eventually(20*time.Second, func(ctx context.Context) error { return f.wantMembers(ctx, f.lbEndpoint(), left) })

		if err := f.gws[1].Start(ctx(t)); err != nil {
			t.Fatal(err)
		}
		f.env.Eventually(30*time.Second, func(ctx context.Context) error {
			for i := range f.gws {
				if err := f.wantMembers(ctx, f.gwEndpoint(i), all); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// fleetPrefix is where the replicas keep their records in etcd
// (proxy/etcd's ReservedPrefix + "fleet/").
const fleetPrefix = "/_storegate/fleet/"

// records reads the replicas' records directly in etcd: their leases, each
// checked to be alive.
func (f *fleet) records(ctx context.Context, c *clientv3.Client) ([]clientv3.LeaseID, error) {
	r, err := c.Get(ctx, fleetPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var leases []clientv3.LeaseID
	for _, kv := range r.Kvs {
		ttl, err := c.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil {
			return nil, err
		}
		if kv.Lease == 0 || ttl.TTL <= 0 {
			return nil, fmt.Errorf("record %s on lease %x with TTL %d", kv.Key, kv.Lease, ttl.TTL)
		}
		leases = append(leases, clientv3.LeaseID(kv.Lease))
	}
	return leases, nil
}

// TestFleetReregisters proves a replica's registration outlives what etcd
// does to it: when every record's lease is revoked behind the replicas'
// backs (as a long outage would expire them), each replica registers again
// on a new lease; when etcd's leader is killed, the records stay on live
// leases and every replica keeps listing the whole fleet.
func TestFleetReregisters(t *testing.T) {
	f := startFleet(t)
	all := f.urls(0, 1, 2)
	direct := f.direct(t)
	everyReplica := func(ctx context.Context) error {
		for i := range f.gws {
			if err := f.wantMembers(ctx, f.gwEndpoint(i), all); err != nil {
				return err
			}
		}
		return nil
	}

	t.Run("leases revoked", func(t *testing.T) {
		old, err := f.records(ctx(t), direct)
		if err != nil || len(old) != 3 {
			t.Fatalf("records: %v %v", old, err)
		}
		for _, id := range old {
			if _, err := direct.Revoke(ctx(t), id); err != nil {
				t.Fatal(err)
			}
		}
		f.env.Eventually(30*time.Second, func(ctx context.Context) error {
			leases, err := f.records(ctx, direct)
			if err != nil {
				return err
			}
			if len(leases) != 3 {
				return fmt.Errorf("%d records, want 3", len(leases))
			}
			for _, id := range leases {
				if slices.Contains(old, id) {
					return fmt.Errorf("record still on revoked lease %x", id)
				}
			}
			return everyReplica(ctx)
		})
	})

	t.Run("etcd leader killed", func(t *testing.T) {
		leader, err := f.ec.Leader(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		f.ec.Kill(leader)
		f.env.Eventually(60*time.Second, func(ctx context.Context) error {
			if _, err := f.ec.Leader(ctx); err != nil {
				return err
			}
			leases, err := f.records(ctx, direct)
			if err != nil {
				return err
			}
			if len(leases) != 3 {
				return fmt.Errorf("%d records, want 3", len(leases))
			}
			return everyReplica(ctx)
		})
		if err := f.ec.Restart(ctx(t), leader); err != nil {
			t.Fatal(err)
		}
		f.env.Eventually(30*time.Second, everyReplica)
	})
}

// etcdctl runs etcdctl as web against the balancer and returns its
// standard output.
func (f *fleet) etcdctl(t *testing.T, args ...string) []byte {
	t.Helper()
	bin, err := testenv.Tool("etcdctl")
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	full := append([]string{"--endpoints", f.lbEndpoint(), "--cacert", f.pki.Bundle(),
		"--cert", f.pki.Cert("web"), "--key", f.pki.Key("web"), "--command-timeout", "20s"}, args...)
	cmd := exec.CommandContext(c, bin, full...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("etcdctl %v: %v\n%s%s", args, err, out, stderr)
	}
	return out
}
