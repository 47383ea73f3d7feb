package failclosed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/internal/testenv"
)

// TestPluginFileFaultsFailClosed proves that a plugin's .wasm file
// truncated in place, then overwritten with garbage, while the gateway runs
// fails to reload with a clear log line, and the loaded version keeps
// judging the ops it matches: the limits plugin (bin/plugins/limits.wasm,
// max_value_bytes 16) still refuses a larger value, which is then not in
// etcd, and still lets a small one through. The gateway never runs the matched ops
// unplugged.
func TestPluginFileFaultsFailClosed(t *testing.T) {
	env := testenv.New(t)
	p := env.PKI("app")
	ec := env.Etcd(testenv.EtcdSpec{PKI: p})
	wasm, err := os.ReadFile(filepath.Join(pluginDir, "limits.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "limits.wasm")
	if err := os.WriteFile(path, wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := env.GatewayConfig(p, env.Policies(testenv.AllowAll), ec.Endpoints, "")
	cfg.Plugins = []config.PluginConfig{{Name: "limits", Path: path, Instances: 1,
		Timeout: config.Duration(2 * time.Second),
		Match:   config.PluginMatch{Protocols: []string{"etcd"}, Resources: []string{"kv"}, Keys: []string{"/config/**"}},
		Config:  map[string]any{"max_value_bytes": 16}}}
	g := env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg})
	kv, _ := kvClient(t, p, "app", g.Etcd)
	direct := env.MembersClient(ec, "etcd")

	judged := func(stage string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/config/good-" + stage), Value: []byte("small")}); err != nil {
			t.Errorf("%s: a valid value: %v", stage, err)
		}
		_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/config/bad-" + stage), Value: []byte(strings.Repeat("x", 100))})
		if err == nil {
			t.Errorf("%s: a 100-byte value was accepted: the plugin did not judge it", stage)
		} else if status.Code(err) != codes.PermissionDenied { // the policy allows all: only the plugin refuses
			t.Errorf("%s: refused with %v, want PermissionDenied", stage, err)
		}
		inEtcd(ctx, t, direct, stage, map[string]bool{"/config/good-" + stage: true, "/config/bad-" + stage: false})
	}
	judged("start")
	failed := func() int { return strings.Count(g.Proc.Logs(), "plugin reload failed, keeping the current version") }
	for _, f := range []struct {
		name  string
		write func() error
	}{
		{"truncated", func() error { return os.Truncate(path, int64(len(wasm)/2)) }},
		{"garbage", func() error { return os.WriteFile(path, []byte(strings.Repeat("garbage\x00", 4096)), 0o644) }},
		{"empty", func() error { return os.Truncate(path, 0) }},
	} {
		before := failed()
		if err := f.write(); err != nil {
			t.Fatal(err)
		}
		env.Eventually(time.Minute, func(context.Context) error {
			if failed() <= before {
				return fmt.Errorf("%s: no failed reload in the gateway's log", f.name)
			}
			return nil
		})
		judged(f.name)
	}
	if err := g.Ready(t.Context()); err != nil {
		t.Errorf("a failed plugin reload made the gateway unready: %v", err)
	}
}
