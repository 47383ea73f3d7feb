package e2e

import (
	"regexp"
	"strings"
	"testing"
)

// TestCheckPerf runs `etcdctl check perf` in its smallest form (load s: 60 s
// of writes from 50 clients, then a prefix delete) direct and through the
// gateway. Both runs must complete every measurement (throughput, slowest
// request, stddev) and clean up their keys. The PASS/FAIL verdicts are
// timing judgements of this loaded 2-core machine (direct runs fail them too
// under -race), so they are logged, not compared; performance is judged by
// `make bench`.
func TestCheckPerf(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{})
	measure := regexp.MustCompile(`Throughput|Slowest request|Stddev`)
	run := func(c ctl, prefix string) string {
		stdout, stderr, err := c.run(t, "", "check", "perf", "--load=s", "--prefix="+prefix)
		t.Logf("check perf via %s: err=%v\n%s", c.endpoint, err, stdout)
		if strings.Contains(stdout+stderr, "permission denied") || !strings.Contains(stdout, "Throughput is") {
			t.Fatalf("check perf did not run: %v\n%s\n%s", err, stdout, stderr)
		}
		var measured []string
		for _, l := range strings.Split(stdout, "\n") {
			if m := measure.FindString(l); m != "" {
				measured = append(measured, m)
			}
		}
		left := mustRun(t, ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}, "", "get", prefix, "--prefix", "--count-only", "-w", "fields")
		if !strings.Contains(left, `"Count" : 0`) {
			t.Errorf("check perf via %s left keys under %s:\n%s", c.endpoint, prefix, left)
		}
		return strings.Join(measured, "\n")
	}
	direct := run(ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}, "/perf-direct/")
	through := run(ctl{p: p, endpoint: "https://" + gw.addr, who: "admin"}, "/perf-gateway/")
	if direct != through {
		t.Errorf("check perf measurements differ\n--- direct ---\n%s\n--- through storegate ---\n%s", direct, through)
	}
}
