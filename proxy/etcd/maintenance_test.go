package etcd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// snapshot reads a whole Snapshot stream.
func snapshot(ctx context.Context, mc pb.MaintenanceClient) ([]byte, error) {
	s, err := mc.Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		buf.Write(r.Blob)
	}
}

// checkSnapshot verifies an etcd snapshot: a bbolt database followed by
// its SHA-256, holding key.
func checkSnapshot(t *testing.T, data []byte, key string) {
	t.Helper()
	if len(data) <= sha256.Size {
		t.Fatalf("snapshot of %d bytes", len(data))
	}
	db, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(db); !bytes.Equal(got[:], sum) {
		t.Fatal("snapshot checksum does not match")
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	mustOK(t, os.WriteFile(path, db, 0o600))
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	mustOK(t, err)
	defer bdb.Close()
	found := false
	mustOK(t, bdb.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return errors.New("no key bucket")
		}
		return b.ForEach(func(_, v []byte) error {
			var kv mvccpb.KeyValue
			if err := proto.Unmarshal(v, &kv); err != nil {
				return err
			}
			found = found || string(kv.Key) == key
			return nil
		})
	}))
	if !found {
		t.Fatalf("snapshot does not hold %s", key)
	}
}

// TestMaintenance: which maintenance calls each caller may make.
func TestMaintenance(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.put(t, "/app/snap", "1")
	clients := map[string]pb.MaintenanceClient{}
	for _, who := range []string{"admin", "monitor", "web", "nobody"} {
		clients[who] = pb.NewMaintenanceClient(e.conn(t, who))
	}
	calls := map[string]func(ctx context.Context, mc pb.MaintenanceClient) error{
		"Status": func(ctx context.Context, mc pb.MaintenanceClient) error {
			r, err := mc.Status(ctx, &pb.StatusRequest{})
			if err == nil && (r.Leader == 0 || r.Header.MemberId != r.Leader || r.DbSize == 0) {
				t.Errorf("status: %v", r)
			}
			return err
		},
		"Hash": func(ctx context.Context, mc pb.MaintenanceClient) error {
			r, err := mc.Hash(ctx, &pb.HashRequest{})
			if err == nil && r.Hash == 0 {
				t.Errorf("hash: %v", r)
			}
			return err
		},
		"HashKV": func(ctx context.Context, mc pb.MaintenanceClient) error {
			r, err := mc.HashKV(ctx, &pb.HashKVRequest{})
			if err == nil && r.Hash == 0 {
				t.Errorf("hashkv: %v", r)
			}
			return err
		},
		"Defragment": func(ctx context.Context, mc pb.MaintenanceClient) error {
			_, err := mc.Defragment(ctx, &pb.DefragmentRequest{})
			return err
		},
		"Snapshot": func(ctx context.Context, mc pb.MaintenanceClient) error {
			data, err := snapshot(ctx, mc)
			if err == nil {
				checkSnapshot(t, data, "/app/snap")
			}
			return err
		},
		"Alarm GET": func(ctx context.Context, mc pb.MaintenanceClient) error {
			r, err := mc.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
			if err == nil && len(r.Alarms) != 0 {
				t.Errorf("alarms: %v", r.Alarms)
			}
			return err
		},
		"Alarm ACTIVATE": func(ctx context.Context, mc pb.MaintenanceClient) error {
			_, err := mc.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_NOSPACE})
			return err
		},
		"Alarm DEACTIVATE": func(ctx context.Context, mc pb.MaintenanceClient) error {
			_, err := mc.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, Alarm: pb.AlarmType_NOSPACE})
			return err
		},
		"MoveLeader": func(ctx context.Context, mc pb.MaintenanceClient) error {
			_, err := mc.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: 1})
			return err
		},
		"Downgrade": func(ctx context.Context, mc pb.MaintenanceClient) error {
			_, err := mc.Downgrade(ctx, &pb.DowngradeRequest{Action: pb.DowngradeRequest_VALIDATE, Version: "3.6"})
			return err
		},
	}
	tests := []struct {
		call    string
		allowed []string // the others are denied
	}{
		{"Status", []string{"admin", "monitor", "web"}},
		{"Hash", []string{"admin", "monitor"}},
		{"HashKV", []string{"admin", "monitor"}},
		{"Alarm GET", []string{"admin", "monitor"}},
		{"Alarm DEACTIVATE", []string{"admin"}},
		{"Alarm ACTIVATE", nil}, // admin would put the cluster in read-only mode
		{"Defragment", []string{"admin"}},
		{"Snapshot", []string{"admin"}},
		{"MoveLeader", nil},
		{"Downgrade", nil},
	}
	for _, tt := range tests {
		for _, who := range []string{"admin", "monitor", "web", "nobody"} {
			allowed := false
			for _, a := range tt.allowed {
				allowed = allowed || a == who
			}
			if who == "admin" && !allowed {
				continue // allowed, but not run: see above
			}
			t.Run(tt.call+"/"+who, func(t *testing.T) {
				err := calls[tt.call](testCtx(t), clients[who])
				if allowed {
					mustOK(t, err)
				} else {
					wantDenied(t, err)
				}
			})
		}
	}
	t.Run("no alarm raised", func(t *testing.T) {
		r, err := e.direct.AlarmList(testCtx(t))
		mustOK(t, err)
		if len(r.Alarms) != 0 {
			t.Fatalf("alarms: %v", r.Alarms)
		}
	})
}

// TestMaintenanceMember: the storegate-member metadata routes a per-member
// call to one member by its hexadecimal ID; a malformed one is
// InvalidArgument.
func TestMaintenanceMember(t *testing.T) {
	e := newEnv(t, envConfig{})
	mc := pb.NewMaintenanceClient(e.conn(t, "admin"))
	st, err := mc.Status(testCtx(t), &pb.StatusRequest{})
	mustOK(t, err)
	id := st.Header.MemberId

	with := func(t *testing.T, v string) context.Context {
		return metadata.AppendToOutgoingContext(testCtx(t), MemberMetadataKey, v)
	}
	t.Run("known member", func(t *testing.T) {
		r, err := mc.Status(with(t, hexID(id)), &pb.StatusRequest{})
		mustOK(t, err)
		if r.Header.MemberId != id {
			t.Fatalf("answered by %x, want %x", r.Header.MemberId, id)
		}
		_, err = mc.HashKV(with(t, hexID(id)), &pb.HashKVRequest{})
		mustOK(t, err)
	})
	t.Run("unknown member", func(t *testing.T) {
		_, err := mc.Status(with(t, hexID(id+1)), &pb.StatusRequest{})
		wantStatus(t, err, codes.NotFound, "")
	})
	for _, bad := range []string{"zz", "0", "", "-1", "0x1f", "1234567890abcdef0"} {
		t.Run("bad value "+bad, func(t *testing.T) {
			calls := map[string]func(ctx context.Context) error{
				"Status": func(ctx context.Context) error { _, err := mc.Status(ctx, &pb.StatusRequest{}); return err },
				"Hash":   func(ctx context.Context) error { _, err := mc.Hash(ctx, &pb.HashRequest{}); return err },
				"HashKV": func(ctx context.Context) error { _, err := mc.HashKV(ctx, &pb.HashKVRequest{}); return err },
				"Defragment": func(ctx context.Context) error {
					_, err := mc.Defragment(ctx, &pb.DefragmentRequest{})
					return err
				},
				"Snapshot": func(ctx context.Context) error { _, err := snapshot(ctx, mc); return err },
			}
			for name, call := range calls {
				err := call(with(t, bad))
				if err == nil {
					t.Fatalf("%s with %s=%q: no error", name, MemberMetadataKey, bad)
				}
				wantStatus(t, err, codes.InvalidArgument, "")
			}
		})
	}
	t.Run("denied before routing", func(t *testing.T) {
		// A caller that may not make the call learns nothing about members.
		_, err := pb.NewMaintenanceClient(e.conn(t, "nobody")).Status(with(t, "zz"), &pb.StatusRequest{})
		wantDenied(t, err)
	})
}

// TestAuthService: etcd's own users and roles are administration.
func TestAuthService(t *testing.T) {
	e := newEnv(t, envConfig{})
	admin := pb.NewAuthClient(e.conn(t, "admin"))
	web := pb.NewAuthClient(e.conn(t, "web"))
	r, err := admin.AuthStatus(testCtx(t), &pb.AuthStatusRequest{})
	mustOK(t, err)
	if r.Enabled {
		t.Fatal("auth enabled")
	}
	_, err = web.AuthStatus(testCtx(t), &pb.AuthStatusRequest{})
	wantDenied(t, err)
	_, err = web.UserAdd(testCtx(t), &pb.AuthUserAddRequest{Name: "root", Password: "x"})
	wantDenied(t, err)
	_, err = web.AuthEnable(testCtx(t), &pb.AuthEnableRequest{})
	wantDenied(t, err)
	_, err = web.Authenticate(testCtx(t), &pb.AuthenticateRequest{Name: "root", Password: "x"})
	wantDenied(t, err)
	_, err = admin.UserAdd(testCtx(t), &pb.AuthUserAddRequest{Name: "u1", Password: "p"})
	mustOK(t, err)
	l, err := admin.UserList(testCtx(t), &pb.AuthUserListRequest{})
	mustOK(t, err)
	if len(l.Users) != 1 || l.Users[0] != "u1" {
		t.Fatalf("users: %v", l.Users)
	}
}
