package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// storegate_policy_info is one series, the current revision's, on the
// /metrics the gateway serves, under exactly that name.
func TestPolicyInfoIsOneSeries(t *testing.T) {
	tel, err := Setup(context.Background(), Config{ServiceName: "storegate", Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	var mu sync.Mutex
	rev := "a"
	if err := RegisterPolicyInfo(tel.MeterProvider(), func() (string, string) {
		mu.Lock()
		defer mu.Unlock()
		return rev, "https://bundles.example/p.tar.gz"
	}); err != nil {
		t.Fatal(err)
	}
	scrape := func() []string {
		rec := httptest.NewRecorder()
		tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ := io.ReadAll(rec.Body)
		var lines []string
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "storegate_policy_info{") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	for _, want := range []string{"a", "b"} {
		mu.Lock()
		rev = want
		mu.Unlock()
		lines := scrape()
		if len(lines) != 1 || !strings.Contains(lines[0], `revision="`+want+`"`) ||
			!strings.Contains(lines[0], `source="https://bundles.example/p.tar.gz"`) || !strings.HasSuffix(lines[0], " 1") {
			t.Errorf("revision %s: storegate_policy_info series %q, want one, of that revision, = 1", want, lines)
		}
	}
}
