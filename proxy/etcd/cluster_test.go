package etcd

import (
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestClusterMemberList: member client URLs come back as the gateway's
// advertised URLs, so that clients that discover the cluster keep going
// through the gateway; everything else is etcd's.
func TestClusterMemberList(t *testing.T) {
	e := newEnv(t, envConfig{opts: Options{AdvertiseURLs: []string{"https://gw.example:23790", "https://gw2.example:23790"}}})
	want := []string{"https://gw.example:23790", "https://gw2.example:23790"}

	direct, err := e.direct.MemberList(testCtx(t))
	mustOK(t, err)
	if len(direct.Members) != 1 || !slices.Equal(direct.Members[0].ClientURLs, []string{e.etcdURL}) {
		t.Fatalf("etcd's own member list: %v", direct.Members)
	}

	for _, who := range []string{"web", "admin"} {
		t.Run(who, func(t *testing.T) {
			r, err := pb.NewClusterClient(e.conn(t, who)).MemberList(testCtx(t), &pb.MemberListRequest{Linearizable: true})
			mustOK(t, err)
			if len(r.Members) != 1 {
				t.Fatalf("members: %v", r.Members)
			}
			m := r.Members[0]
			if !slices.Equal(m.ClientURLs, want) {
				t.Fatalf("client URLs %q, want %q", m.ClientURLs, want)
			}
			d := direct.Members[0]
			// Peer URLs are the members' own addresses: only a caller that
			// may administer the cluster sees them.
			wantPeers := d.PeerURLs
			if who != "admin" {
				wantPeers = nil
			}
			if m.ID != d.ID || m.Name != d.Name || !slices.Equal(m.PeerURLs, wantPeers) || len(d.PeerURLs) == 0 {
				t.Fatalf("member %v, want etcd's %v but for client URLs, peer URLs %q", m, d, wantPeers)
			}
		})
	}
	t.Run("client/v3", func(t *testing.T) {
		r, err := e.client(t, "web").MemberList(testCtx(t))
		mustOK(t, err)
		if !slices.Equal(r.Members[0].ClientURLs, want) {
			t.Fatalf("client URLs %q", r.Members[0].ClientURLs)
		}
	})
	t.Run("denied", func(t *testing.T) {
		_, err := pb.NewClusterClient(e.conn(t, "nobody")).MemberList(testCtx(t), &pb.MemberListRequest{})
		wantDenied(t, err)
	})
}

// TestClusterMemberChanges: member changes are admin operations; their
// answers are rewritten too, and members that never started (no client
// URLs) are left as they are.
func TestClusterMemberChanges(t *testing.T) {
	e := newEnv(t, envConfig{})
	gw := []string{"https://" + e.addr}
	peer := []string{"http://" + freeAddr(t)}
	web := pb.NewClusterClient(e.conn(t, "web"))
	admin := pb.NewClusterClient(e.conn(t, "admin"))

	members := func(t *testing.T) int {
		r, err := e.direct.MemberList(testCtx(t))
		mustOK(t, err)
		return len(r.Members)
	}
	self, err := e.direct.MemberList(testCtx(t))
	mustOK(t, err)
	selfID := self.Members[0].ID

	tests := []struct {
		name string
		do   func() error
	}{
		{"add", func() error {
			_, err := web.MemberAdd(testCtx(t), &pb.MemberAddRequest{PeerURLs: peer, IsLearner: true})
			return err
		}},
		{"remove", func() error {
			_, err := web.MemberRemove(testCtx(t), &pb.MemberRemoveRequest{ID: selfID})
			return err
		}},
		{"update", func() error {
			_, err := web.MemberUpdate(testCtx(t), &pb.MemberUpdateRequest{ID: selfID, PeerURLs: peer})
			return err
		}},
		{"promote", func() error {
			_, err := web.MemberPromote(testCtx(t), &pb.MemberPromoteRequest{ID: selfID})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run("web "+tt.name, func(t *testing.T) {
			wantDenied(t, tt.do())
			if n := members(t); n != 1 {
				t.Fatalf("%d members after a denied change", n)
			}
		})
	}

	t.Run("admin add and remove a learner", func(t *testing.T) {
		add, err := admin.MemberAdd(testCtx(t), &pb.MemberAddRequest{PeerURLs: peer, IsLearner: true})
		mustOK(t, err)
		if !add.Member.IsLearner || len(add.Member.ClientURLs) != 0 {
			t.Fatalf("added %v", add.Member)
		}
		if len(add.Members) != 2 {
			t.Fatalf("members after add: %v", add.Members)
		}
		for _, m := range add.Members {
			switch m.ID {
			case selfID:
				if !slices.Equal(m.ClientURLs, gw) {
					t.Fatalf("started member's client URLs %q, want %q", m.ClientURLs, gw)
				}
			case add.Member.ID:
				if len(m.ClientURLs) != 0 {
					t.Fatalf("unstarted member got client URLs %q", m.ClientURLs)
				}
			default:
				t.Fatalf("unknown member %v", m)
			}
		}
		rm, err := admin.MemberRemove(testCtx(t), &pb.MemberRemoveRequest{ID: add.Member.ID})
		mustOK(t, err)
		if len(rm.Members) != 1 || !slices.Equal(rm.Members[0].ClientURLs, gw) {
			t.Fatalf("members after remove: %v", rm.Members)
		}
		if n := members(t); n != 1 {
			t.Fatalf("%d members in etcd after remove", n)
		}
	})
}
