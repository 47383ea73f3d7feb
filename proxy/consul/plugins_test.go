package consul

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/plugins"
)

// examplePlugin is a built example module; make plugins builds them (make
// test does so first).
func examplePlugin(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "bin", "plugins", name+".wasm"))
	if err == nil {
		_, err = os.Stat(p)
	}
	if err != nil {
		t.Fatalf("example plugin %s: %v (run make plugins)", name, err)
	}
	return p
}

// TestPluginsConsulTxn: a transaction's KV ops go through plugins like KV
// requests: namespaced on the way in and stripped on the way out,
// encrypted at rest and decrypted for the caller, results found by the key
// they are stored under.
func TestPluginsConsulTxn(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	host, err := plugins.New(context.Background(), []plugins.Spec{
		{Name: "namespace", Path: examplePlugin(t, "namespace"), Config: []byte(`{"root":"/tenants"}`),
			Match: plugins.Match{Resources: []gate.Resource{gate.ResourceKV}}},
		{Name: "encrypt", Path: examplePlugin(t, "encrypt"), Config: []byte(`{"key_base64":"` + key + `","prefixes":["/tenants/web/app/private/"]}`),
			Match: plugins.Match{Resources: []gate.Resource{gate.ResourceKV}}},
	}, plugins.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(context.Background()) })
	e := newEnv(t, gate.WithPlugins(host))

	put := `[{"KV":{"Verb":"set","Key":"app/a","Value":"` + base64.StdEncoding.EncodeToString([]byte("plain-a")) + `"}},
	         {"KV":{"Verb":"set","Key":"app/private/p","Value":"` + base64.StdEncoding.EncodeToString([]byte("s3cr3t")) + `"}}]`
	if code, out := e.do(t, "web", http.MethodPut, "/v1/txn", []byte(put)); code != 200 || strings.Contains(out, "tenants") {
		t.Fatalf("txn set: %d %s", code, out)
	}
	// In the store: under the caller's namespace, the private value sealed.
	if code, out := e.do(t, "", http.MethodGet, "/v1/kv/tenants/web/app/a?raw", nil); code != 200 || out != "plain-a" {
		t.Errorf("stored app/a: %d %q", code, out)
	}
	if code, out := e.do(t, "", http.MethodGet, "/v1/kv/tenants/web/app/private/p?raw", nil); code != 200 || strings.Contains(out, "s3cr3t") {
		t.Errorf("stored app/private/p is not ciphertext: %d %q", code, out)
	}
	// Read back in one transaction: the caller's keys and plaintext.
	get := `[{"KV":{"Verb":"get","Key":"app/a"}},{"KV":{"Verb":"get-tree","Key":"app/private/"}}]`
	code, out := e.do(t, "web", http.MethodPut, "/v1/txn", []byte(get))
	if code != 200 {
		t.Fatalf("txn get: %d %s", code, out)
	}
	var ans struct {
		Results []struct{ KV struct{ Key, Value string } }
	}
	if err := json.Unmarshal([]byte(out), &ans); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := map[string]string{}
	for _, r := range ans.Results {
		v, _ := base64.StdEncoding.DecodeString(r.KV.Value)
		got[r.KV.Key] = string(v)
	}
	if len(got) != 2 || got["app/a"] != "plain-a" || got["app/private/p"] != "s3cr3t" {
		t.Errorf("txn results as the caller sees them: %v (%s)", got, out)
	}
}
