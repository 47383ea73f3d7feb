package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/storegate/storegate/gate"
)

func TestShippedDecisions(t *testing.T) {
	e := mustLoad(t, shipped, ModeEnforce)
	svc := func(a gate.Action, name string) *gate.Op {
		return &gate.Op{Protocol: gate.ProtocolConsul, Resource: gate.ResourceService, Action: a,
			Service: &gate.Service{Name: name, ID: name + "-1", Tags: []string{"v1"}, Meta: map[string]string{"team": "web"}}}
	}
	tests := []struct {
		name   string
		caller gate.Identity
		op     *gate.Op
		want   gate.Effect
		reason string // for Deny
	}{
		{"web reads its keys", web, kvOp(gate.ActionRead, "/app/config/db"), gate.Allow, ""},
		{"web writes its keys", web, kvOp(gate.ActionWrite, "/app/a/b"), gate.Allow, ""},
		{"web deletes its keys", web, kvOp(gate.ActionDelete, "/app/a"), gate.Allow, ""},
		{"web watches its keys", web, &gate.Op{Resource: gate.ResourceWatch, Action: gate.ActionWatch, Keys: gate.KeyRange{Key: []byte("/app/x")}}, gate.Allow, ""},
		{"web may not write elsewhere", web, kvOp(gate.ActionWrite, "/other/x"), gate.Deny,
			`no intention allows spiffe://example.org/web to write kv "/other/x"`},
		{"deny wins", web, kvOp(gate.ActionRead, "/app/secret/db-password"), gate.Deny,
			`deny intention "web-no-secrets" matches`},
		{"admin reads secrets", admin, kvOp(gate.ActionRead, "/app/secret/db-password"), gate.Allow, ""},
		{"admin compacts", admin, bareOp(gate.ResourceKV, gate.ActionCompact), gate.Allow, ""},
		{"admin deletes everything", admin, &gate.Op{Resource: gate.ResourceKV, Action: gate.ActionDelete,
			Keys: gate.KeyRange{Key: []byte{0}, End: []byte{0}}}, gate.Allow, ""},
		{"web grants leases", web, bareOp(gate.ResourceLease, gate.ActionGrant), gate.Allow, ""},
		{"web keeps leases alive", web, &gate.Op{Resource: gate.ResourceLease, Action: gate.ActionKeepalive, Lease: 0x7a}, gate.Allow, ""},
		{"batch grants no lease", batch, bareOp(gate.ResourceLease, gate.ActionGrant), gate.Deny,
			"no intention allows spiffe://example.org/batch to grant lease"},
		{"web locks", web, &gate.Op{Resource: gate.ResourceLock, Action: gate.ActionAcquire, Keys: gate.KeyRange{Key: []byte("/app/locks/leader")}}, gate.Allow, ""},
		{"web campaigns", web, &gate.Op{Resource: gate.ResourceElection, Action: gate.ActionCampaign, Keys: gate.KeyRange{Key: []byte("/app/election/primary")}}, gate.Allow, ""},
		{"web reads status", web, bareOp(gate.ResourceStatus, gate.ActionRead), gate.Allow, ""},
		{"batch reads status", batch, bareOp(gate.ResourceStatus, gate.ActionRead), gate.Allow, ""},
		{"status is one segment deep", identity("spiffe://example.org/ns/batch"), bareOp(gate.ResourceStatus, gate.ActionRead), gate.Deny,
			"no intention allows spiffe://example.org/ns/batch to read status"},
		{"other trust domain", identity("spiffe://other.org/web"), kvOp(gate.ActionRead, "/app/x"), gate.Deny,
			`no intention allows spiffe://other.org/web to read kv "/app/x"`},
		{"web is no cluster admin", web, bareOp(gate.ResourceCluster, gate.ActionAdmin), gate.Deny,
			"no intention allows spiffe://example.org/web to admin cluster"},
		{"keyed intentions need a key", web, bareOp(gate.ResourceKV, gate.ActionRead), gate.Deny,
			"no intention allows spiffe://example.org/web to read kv"},
		{"shared top level", batch, kvOp(gate.ActionRead, "/shared/motd"), gate.Allow, ""},
		{"shared is one segment deep", batch, kvOp(gate.ActionRead, "/shared/a/b"), gate.Deny,
			`no intention allows spiffe://example.org/batch to read kv "/shared/a/b"`},
		{"web registers its services", web, svc(gate.ActionRegister, "web-frontend"), gate.Allow, ""},
		{"web registers no other service", web, svc(gate.ActionRegister, "db"), gate.Deny,
			`no intention allows spiffe://example.org/web to register service "db"`},
		{"range inside allowed", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/config/"), gate.Allow, ""},
		{"range overlapping a deny is filtered", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/"), gate.Filter, ""},
		{"watch overlapping a deny is filtered", web, prefixOp(gate.ResourceWatch, gate.ActionWatch, "/app/"), gate.Filter, ""},
		{"range wider than allowed is filtered", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/"), gate.Filter, ""},
		{"range delete overlapping a deny", web, prefixOp(gate.ResourceKV, gate.ActionDelete, "/app/"), gate.Deny,
			`deny intention "web-no-secrets" may match keys in kv prefix "/app/"`},
		{"range inside a deny", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/app/secret/"), gate.Deny,
			`deny intention "web-no-secrets" matches every key in kv prefix "/app/secret/"`},
		{"range elsewhere", web, prefixOp(gate.ResourceKV, gate.ActionRead, "/other/"), gate.Deny,
			`no intention allows spiffe://example.org/web to read kv prefix "/other/"`},
		// The same ops as "web keeps leases alive" and "admin compacts",
		// but on what another identity owns: the cached engine must not
		// answer them from the decisions above.
		{"web keeps admin's lease alive", web, foreignLease(gate.ActionKeepalive, admin.String()), gate.Deny,
			"no intention allows spiffe://example.org/web to keepalive lease"},
		{"web keeps an ownerless lease alive", web, foreignLease(gate.ActionKeepalive, ""), gate.Deny,
			"no intention allows spiffe://example.org/web to keepalive lease"},
		{"admin keeps web's lease alive", admin, foreignLease(gate.ActionKeepalive, web.String()), gate.Allow, ""},
		{"admin revokes an ownerless lease", admin, foreignLease(gate.ActionRevoke, ""), gate.Allow, ""},
		{"admin attaches keys to web's lease", admin, foreignLease(gate.ActionWrite, web.String()), gate.Allow, ""},
		{"admin attaches keys to a gateway's lease", admin, foreignLease(gate.ActionWrite, "spiffe://example.org/storegate"), gate.Deny,
			`deny intention "gateway-leases" matches`},
	}
	cached, err := Load(context.Background(), Config{Dir: shipped, Logger: discardLogger(), CacheSize: 64, EvalTimeout: mustLoadTimeout})
	if err != nil {
		t.Fatal(err)
	}
	for _, engine := range []struct {
		name string
		e    *Engine
		runs int
	}{{"uncached", e, 1}, {"cached", cached, 3}} {
		for _, tt := range tests {
			t.Run(engine.name+"/"+tt.name, func(t *testing.T) {
				for range engine.runs { // the cached engine answers runs 2 and 3 from its cache
					d, err := engine.e.Authorize(context.Background(), tt.caller, tt.op)
					if err != nil {
						t.Fatal(err)
					}
					if d.Effect != tt.want || d.Reason != tt.reason || d.Shadow {
						t.Errorf("Authorize = %v %q shadow=%v; want %v %q", d.Effect, d.Reason, d.Shadow, tt.want, tt.reason)
					}
					if d.Revision != engine.e.Revision() || d.Revision == "" {
						t.Errorf("revision %q, engine at %q", d.Revision, engine.e.Revision())
					}
				}
			})
		}
	}
}

func TestShadowMode(t *testing.T) {
	e := mustLoad(t, shipped, ModeShadow)
	tests := []struct {
		name   string
		op     *gate.Op
		shadow bool
		reason string
	}{
		{"allowed", kvOp(gate.ActionRead, "/app/x"), false, ""},
		{"denied", kvOp(gate.ActionRead, "/app/secret/x"), true, `deny intention "web-no-secrets" matches`},
		{"filtered", prefixOp(gate.ResourceKV, gate.ActionRead, "/app/"), true,
			`range would be filtered: deny intention "web-no-secrets" may match keys in kv prefix "/app/"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Authorize(context.Background(), web, tt.op)
			if err != nil {
				t.Fatal(err)
			}
			if d.Effect != gate.Allow || d.Shadow != tt.shadow || d.Reason != tt.reason {
				t.Errorf("Authorize = %v %q shadow=%v; want allow %q shadow=%v", d.Effect, d.Reason, d.Shadow, tt.reason, tt.shadow)
			}
		})
	}
}

func TestNoPolicyDeniesEverything(t *testing.T) {
	tests := []struct {
		name string
		dir  string
		warn string
	}{
		{"empty directory", t.TempDir(), "policy directory holds no policy"},
		{"missing directory", filepath.Join(t.TempDir(), "nowhere"), "policy directory does not exist"},
		{"only other files", func() string {
			dir := t.TempDir()
			writeFile(t, dir, "README.md", "# policies\n")
			writeFile(t, dir, "authz_test.rego", "package storegate.authz_test\n")
			return dir
		}(), "policy directory holds no policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logBuffer
			e, err := Load(context.Background(), Config{Dir: tt.dir, Logger: newLogger(&logs), EvalTimeout: mustLoadTimeout})
			if err != nil {
				t.Fatal(err)
			}
			if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, tt.warn) || !strings.Contains(out, tt.dir) {
				t.Errorf("log %q: want a warning %q naming %s", out, tt.warn, tt.dir)
			}
			d, err := e.Authorize(context.Background(), admin, kvOp(gate.ActionRead, "/x"))
			if err != nil || d.Effect != gate.Deny || d.Reason != "no policy loaded: every request is denied" {
				t.Errorf("Authorize = %+v, %v", d, err)
			}
			if e.Revision() != "none" {
				t.Errorf("Revision = %q", e.Revision())
			}
		})
	}
}

func TestLoadErrorsNameFileAndLine(t *testing.T) {
	tests := []struct {
		dir  string
		want []string
	}{
		{"testdata/broken-rego", []string{"policy: ", "testdata/broken-rego/authz.rego:7:", "rego_parse_error"}},
		{"testdata/type-error", []string{"policy: ", "testdata/type-error/authz.rego:6:", "no_such_function"}},
		{"testdata/broken-yaml", []string{"policy: ", "testdata/broken-yaml/intentions.yaml", "line 4"}},
		{"testdata/unknown-field", []string{"policy: testdata/unknown-field/intentions.yaml:6: unknown field \"efect\"",
			`intentions.yaml:2: intention "web": effect is required`}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			_, err := Load(context.Background(), Config{Dir: tt.dir, Logger: discardLogger()})
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPolicyWithoutAllowDenies(t *testing.T) {
	tests := []struct {
		dir     string
		wantErr bool
		warn    string
	}{
		{"testdata/no-allow-rule", false, "no rule defines data.storegate.authz.allow"},
		{"testdata/non-boolean-allow", false, ""},
		{"testdata/conflicting-allow", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			var logs logBuffer
			e, err := Load(context.Background(), Config{Dir: tt.dir, Logger: newLogger(&logs), EvalTimeout: mustLoadTimeout})
			if err != nil {
				t.Fatal(err)
			}
			if tt.warn != "" && !strings.Contains(logs.String(), tt.warn) {
				t.Errorf("log %q lacks %q", logs.String(), tt.warn)
			}
			d, err := e.Authorize(context.Background(), web, kvOp(gate.ActionRead, "/app/x"))
			if d.Effect != gate.Deny || (err != nil) != tt.wantErr {
				t.Errorf("Authorize = %+v, %v; want deny, error %v", d, err, tt.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "policy: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			// Shadow mode lets even a failing policy through, and says why.
			s := &Engine{dir: e.dir, mode: ModeShadow, log: e.log}
			s.current.Store(e.current.Load())
			d, err = s.Authorize(context.Background(), web, kvOp(gate.ActionRead, "/app/x"))
			if err != nil || d.Effect != gate.Allow || !d.Shadow || d.Reason == "" {
				t.Errorf("shadow Authorize = %+v, %v", d, err)
			}
		})
	}
}

func TestAuthorizeHonoursContext(t *testing.T) {
	e := mustLoad(t, shipped, ModeEnforce)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := e.Authorize(ctx, web, kvOp(gate.ActionRead, "/app/x"))
	if !errors.Is(err, context.Canceled) || d.Effect != gate.Deny {
		t.Errorf("Authorize = %+v, %v; want deny and context.Canceled", d, err)
	}
}

func TestReloadKeepsLastGoodVersion(t *testing.T) {
	dir := copyShipped(t)
	var logs logBuffer
	e, err := Load(context.Background(), Config{Dir: dir, Logger: newLogger(&logs), EvalTimeout: mustLoadTimeout})
	if err != nil {
		t.Fatal(err)
	}
	good := e.Revision()
	if err := e.Reload(context.Background()); err != nil || e.Revision() != good {
		t.Fatalf("Reload of unchanged files = %v, revision %s -> %s", err, good, e.Revision())
	}

	tests := []struct {
		name, file, content, want string
	}{
		{"broken rego", "authz.rego", "package storegate.authz\n\nallow if {\n", "authz.rego:4: rego_parse_error"},
		{"broken intentions", IntentionsFile, "intentions:\n  - name: x\n    surce: y\n", "intentions.yaml:3: unknown field"},
		{"new broken file", "extra.rego", "package storegate.extra\n\nx := \n", "extra.rego:4: rego_parse_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			old, _ := os.ReadFile(path)
			writeFile(t, dir, tt.file, tt.content)
			err := e.Reload(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Reload = %v; want an error naming %s", err, tt.want)
			}
			if e.Revision() != good {
				t.Errorf("revision %s, want the last good %s", e.Revision(), good)
			}
			if d, _ := e.Authorize(context.Background(), web, kvOp(gate.ActionRead, "/app/x")); d.Effect != gate.Allow {
				t.Errorf("after a failed reload: %+v", d)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), tt.want) {
				t.Errorf("no error logged naming %s: %s", tt.want, logs.String())
			}
			if old == nil {
				os.Remove(path)
			} else {
				writeFile(t, dir, tt.file, string(old))
			}
		})
	}

	// A good change goes live.
	writeFile(t, dir, "extra.rego", "package storegate.authz\n\nallow if input.caller.id == \"spiffe://example.org/batch\"\n")
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.Revision() == good {
		t.Error("revision did not change")
	}
	if d, _ := e.Authorize(context.Background(), batch, kvOp(gate.ActionWrite, "/anything")); d.Effect != gate.Allow {
		t.Errorf("after reload: %+v", d)
	}
}

func TestLoadRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Dir: shipped, Mode: 7}} {
		if _, err := Load(context.Background(), cfg); err == nil || !strings.HasPrefix(err.Error(), "policy: ") {
			t.Errorf("Load(%+v) = %v", cfg, err)
		}
	}
}

func TestAuthorizeDuringReloads(t *testing.T) {
	dir := copyShipped(t)
	e := mustLoad(t, dir, ModeEnforce)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for ctx.Err() == nil {
				// Both versions allow this; neither may ever deny it.
				d, err := e.Authorize(context.Background(), web, kvOp(gate.ActionRead, "/app/x"))
				if err != nil || d.Effect != gate.Allow {
					errs <- fmt.Errorf("Authorize = %+v, %v", d, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for i := range 10 {
		writeFile(t, dir, "extra.rego", fmt.Sprintf("package storegate.extra\n\nversion := %d\n", i))
		if err := e.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
