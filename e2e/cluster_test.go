package e2e

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/internal/testenv"
)

var memberLineRe = regexp.MustCompile(`(?m)^([0-9a-f]+), started, (m\d), `)

// members parses `etcdctl member list` into name → hex ID.
func members(t *testing.T, c ctl) map[string]string {
	t.Helper()
	out := mustRun(t, c, "", "member", "list")
	ids := map[string]string{}
	for _, m := range memberLineRe.FindAllStringSubmatch(out, -1) {
		ids[m[2]] = m[1]
	}
	if len(ids) == 0 {
		t.Fatalf("no members in %q", out)
	}
	return ids
}

// leaderID returns the hex ID of the current leader, read through c.
func leaderID(t *testing.T, c ctl) string {
	t.Helper()
	out := mustRun(t, c, "", "endpoint", "status", "-w", "fields")
	m := regexp.MustCompile(`"Leader" : (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no leader in %s", out)
	}
	return decToHex(t, m[1])
}

// TestThreeMemberCluster: member list, endpoint status and move-leader
// through the gateway on a 3-member cluster, compared with etcdctl direct;
// then a member restart and a whole-cluster restart under a running gateway.
func TestThreeMemberCluster(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 3)
	gw := startGateway(t, p, ec, gatewayOpts{})
	direct := ctl{p: p, endpoint: strings.Join(ec.endpoints, ","), who: "admin"}
	through := ctl{p: p, endpoint: "https://" + gw.addr, who: "admin"}

	if d, g := mask(mustRun(t, direct, "", "member", "list"), ""), mask(mustRun(t, through, "", "member", "list"), ""); d != g {
		t.Errorf("member list differs\n--- direct ---\n%s--- through storegate ---\n%s", d, g)
	}
	ids := members(t, through)
	if len(ids) != 3 {
		t.Fatalf("members = %v", ids)
	}

	// move-leader, twice: direct, then through the gateway.
	for _, c := range []struct {
		name string
		ctl  ctl
	}{{"direct", direct}, {"storegate", through}} {
		leader := leaderID(t, through)
		var target string
		for _, id := range ids {
			if id != leader {
				target = id
				break
			}
		}
		out := mustRun(t, c.ctl, "", "move-leader", target)
		want := "Leadership transferred from " + leader + " to " + target
		if !strings.Contains(out, want) {
			t.Errorf("%s move-leader: %q, want %q", c.name, out, want)
		}
		waitFor(t, 20*time.Second, func() bool { return leaderID(t, through) == target })
	}

	// endpoint status through the gateway answers for the leader.
	st := mustRun(t, through, "", "endpoint", "status", "-w", "fields")
	if !strings.Contains(st, `"IsLearner" : false`) || !regexp.MustCompile(`"Leader" : (\d+)`).MatchString(st) {
		t.Errorf("endpoint status: %s", st)
	}
	// hashkv and defrag go to the leader too.
	if out := mustRun(t, through, "", "endpoint", "hashkv"); !strings.Contains(out, "https://"+gw.addr) {
		t.Errorf("hashkv: %s", out)
	}
	mustRun(t, through, "", "defrag")

	// One member restarts: the gateway keeps serving, then uses it again.
	ec.Kill(1)
	mustRun(t, through, "", "put", "/restart/one", "1")
	if err := ec.Restart(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	mustRun(t, through, "", "put", "/restart/two", "2")

	// The whole cluster restarts: no gateway restart needed.
	for i := range ec.Members {
		ec.Kill(i)
	}
	quick := through
	quick.timeout = "2s"
	if _, _, err := quick.run(t, "", "get", "/restart/one"); err == nil {
		t.Fatal("get succeeded with the whole cluster down")
	}
	if code := readyzStatus(t, gw); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the cluster down = %d, want 503", code)
	}
	if err := ec.RestartMembers(t.Context(), 0, 1, 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool {
		out, _, err := quick.run(t, "", "get", "/restart/two", "--print-value-only")
		return err == nil && out == "2\n"
	})
	mustRun(t, through, "", "put", "/restart/three", "3")
	// Ready again once the cluster answers with a leader.
	waitFor(t, 30*time.Second, func() bool { return readyzStatus(t, gw) == http.StatusOK })
}

func readyzStatus(t *testing.T, gw *gateway) int {
	t.Helper()
	resp, err := http.Get("http://" + gw.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor waits (testenv's Eventually) until ok holds, failing the test
// after d.
func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	testenv.New(t).Eventually(d, func(context.Context) error {
		if ok() {
			return nil
		}
		return errors.New("condition not met")
	})
}

func decToHex(t *testing.T, dec string) string {
	t.Helper()
	var n uint64
	for _, r := range dec {
		n = n*10 + uint64(r-'0')
	}
	const digits = "0123456789abcdef"
	var b []byte
	for n > 0 {
		b = append([]byte{digits[n%16]}, b...)
		n /= 16
	}
	return string(b)
}
