package e2e

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// A step is one etcdctl invocation; {p} is replaced by the run's key prefix
// and {lease}, {rev}, {dir} by values the run learned.
type step struct {
	name  string
	stdin string
	args  string
	fails bool // etcdctl exits non-zero (in both runs)
}

var compareSteps = []step{
	{name: "put", args: "put {p}/a 1"},
	{name: "put-b", args: "put {p}/b 2"},
	{name: "put-prev-kv", args: "put {p}/b 3 --prev-kv"},
	{name: "put-ignore-value", args: "put {p}/b --ignore-value"},
	{name: "get", args: "get {p}/a"},
	{name: "get-missing", args: "get {p}/missing"},
	{name: "get-prefix", args: "get {p}/ --prefix"},
	{name: "get-keys-only", args: "get {p}/ --prefix --keys-only"},
	{name: "get-count-only", args: "get {p}/ --prefix --count-only -w fields"},
	{name: "get-limit", args: "get {p}/ --prefix --limit 1"},
	{name: "get-sort", args: "get {p}/ --prefix --sort-by=KEY --order=DESCEND"},
	{name: "get-value-only", args: "get {p}/ --prefix --print-value-only"},
	{name: "get-from-key", args: "get {p}/b --from-key --limit 1"},
	{name: "get-serializable", args: "get {p}/a --consistency=s"},
	{name: "get-stream", args: "get {p}/ --prefix --stream"},
	{name: "get-json", args: "get {p}/a -w json"},
	{name: "get-fields", args: "get {p}/a -w fields"},
	{name: "txn", stdin: "mod(\"{p}/a\") > \"0\"\n\nput {p}/t ok\nget {p}/a\n\nput {p}/t failed\n\n", args: "txn"},
	{name: "txn-failure", stdin: "value(\"{p}/a\") = \"nope\"\n\nput {p}/t ok\n\ndel {p}/t\nget {p}/b\n\n", args: "txn -w json"},
	{name: "del", args: "del {p}/a"},
	{name: "del-prefix-prev-kv", args: "del {p}/ --prefix --prev-kv"},
	{name: "lease-grant", args: "lease grant 60"},
	{name: "put-lease", args: "put {p}/l v --lease={lease}"},
	{name: "put-ignore-lease", args: "put {p}/l v2 --ignore-lease"},
	{name: "lease-ttl", args: "lease timetolive {lease} --keys"},
	{name: "lease-keep-alive", args: "lease keep-alive --once {lease}"},
	{name: "lease-revoke", args: "lease revoke {lease}"},
	{name: "lease-revoked-ttl", args: "lease timetolive {lease}"},
	{name: "lock", args: "lock {p}/lk echo locked-and-ran"},
	{name: "compaction", args: "compaction {rev}"},
	{name: "endpoint-health", args: "endpoint health"},
	{name: "endpoint-status", args: "endpoint status -w json"},
	{name: "endpoint-hashkv", args: "endpoint hashkv -w json"},
	{name: "member-list", args: "member list"},
	{name: "alarm-list", args: "alarm list"},
	{name: "defrag", args: "defrag"},
	{name: "snapshot-save", args: "snapshot save {dir}/snap.db"},
	{name: "put-empty-key", args: "put '' x", fails: true},
	{name: "lease-revoke-missing", args: "lease revoke 1234", fails: true},
}

var (
	leaseRe = regexp.MustCompile(`lease ([0-9a-f]+) granted`)
	revRe   = regexp.MustCompile(`"revision":(\d+)`)
)

// runSteps runs every step through c and returns the masked output of each.
func runSteps(t *testing.T, c ctl, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	vars := map[string]string{"{p}": prefix, "{dir}": t.TempDir()}
	for _, s := range compareSteps {
		if s.name == "compaction" {
			o, _, err := c.run(t, "", "get", prefix, "-w", "json")
			if err != nil {
				t.Fatalf("reading the revision: %v", err)
			}
			m := revRe.FindStringSubmatch(o)
			if m == nil {
				t.Fatalf("no revision in %s", o)
			}
			vars["{rev}"] = m[1]
		}
		args := s.args
		stdin := s.stdin
		for k, v := range vars {
			args = strings.ReplaceAll(args, k, v)
			stdin = strings.ReplaceAll(stdin, k, v)
		}
		argv := splitArgs(args)
		stdout, stderr, err := c.run(t, stdin, argv...)
		if (err != nil) != s.fails {
			t.Errorf("%s (%s): err = %v, want failure %v\nstdout: %s\nstderr: %s", s.name, args, err, s.fails, stdout, stderr)
		}
		if m := leaseRe.FindStringSubmatch(stdout); m != nil {
			vars["{lease}"] = m[1]
		}
		got := stdout
		if err != nil {
			got += "\nERR: " + dropClientLogs(stderr)
		}
		got = strings.ReplaceAll(got, vars["{dir}"], "DIR")
		out[s.name] = mask(got, prefix)
	}
	return out
}

// splitArgs splits on spaces; ” is an empty argument.
func splitArgs(s string) []string {
	f := strings.Fields(s)
	for i, a := range f {
		if a == "''" {
			f[i] = ""
		}
	}
	return f
}

// TestEtcdctlSameThroughGateway runs every etcdctl command family direct to
// etcd and through the gateway (allow-all policy) and compares the outputs
// after masking revisions, IDs and timings.
func TestEtcdctlSameThroughGateway(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{})

	direct := runSteps(t, ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}, "/cmp-d")
	through := runSteps(t, ctl{p: p, endpoint: "https://" + gw.addr, who: "admin"}, "/cmp-g")
	for _, s := range compareSteps {
		if direct[s.name] != through[s.name] {
			t.Errorf("%s: output differs\n--- direct ---\n%s\n--- through storegate ---\n%s", s.name, direct[s.name], through[s.name])
		} else {
			t.Logf("%-22s same: %q", s.name, firstLine(through[s.name]))
		}
	}
	// The gateway's member list points clients at the gateway, never at etcd.
	c := ctl{p: p, endpoint: "https://" + gw.addr, who: "admin"}
	o, _, err := c.run(t, "", "member", "list", "-w", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ml struct {
		Members []struct {
			ClientURLs []string `json:"clientURLs"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(o), &ml); err != nil {
		t.Fatalf("member list json: %v\n%s", err, o)
	}
	for _, m := range ml.Members {
		if len(m.ClientURLs) != 1 || m.ClientURLs[0] != "https://"+gw.addr {
			t.Errorf("member client URLs = %v, want only the gateway https://%s", m.ClientURLs, gw.addr)
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// TestWatchSameThroughGateway compares watches from a revision and on a
// prefix, direct and through the gateway.
func TestWatchSameThroughGateway(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{})
	run := func(c ctl, prefix string) string {
		o, _, err := c.run(t, "", "put", prefix+"/w/1", "one", "-w", "json")
		if err != nil {
			t.Fatal(err)
		}
		rev := revRe.FindStringSubmatch(o)[1]
		w := c.start(t, "watch", prefix+"/w/", "--prefix", "--rev="+rev, "--prev-kv")
		w.waitFor(t, "one")
		if _, _, err := c.run(t, "", "put", prefix+"/w/2", "two"); err != nil {
			t.Fatal(err)
		}
		w.waitFor(t, "two")
		if _, _, err := c.run(t, "", "del", prefix+"/w/1"); err != nil {
			t.Fatal(err)
		}
		w.waitFor(t, "DELETE")
		w.stop()
		return mask(w.out.String(), prefix)
	}
	direct := run(ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}, "/wd")
	through := run(ctl{p: p, endpoint: "https://" + gw.addr, who: "admin"}, "/wg")
	if direct != through {
		t.Errorf("watch output differs\n--- direct ---\n%s\n--- through storegate ---\n%s", direct, through)
	}
	if !strings.Contains(through, "PUT\n/P/w/1\none") || !strings.Contains(through, "DELETE\n/P/w/1") {
		t.Errorf("watch through storegate missed events:\n%s", through)
	}
}

// TestElectSameThroughGateway runs `etcdctl elect` (campaign, then an
// observer with -l) direct and through the gateway.
func TestElectSameThroughGateway(t *testing.T) {
	p := newPKI(t, "admin")
	ec := startEtcd(t, p, 1)
	gw := startGateway(t, p, ec, gatewayOpts{})
	run := func(c ctl, prefix string) string {
		leader := c.start(t, "elect", prefix+"/el", "proposal-one")
		leader.waitFor(t, prefix+"/el/")
		obs := c.start(t, "elect", "-l", prefix+"/el")
		obs.waitFor(t, "proposal-one")
		obs.stop()
		leader.stop()
		return mask(leader.out.String()+"--\n"+obs.out.String(), prefix)
	}
	direct := run(ctl{p: p, endpoint: ec.endpoints[0], who: "admin"}, "/ed")
	through := run(ctl{p: p, endpoint: "https://" + gw.addr, who: "admin"}, "/eg")
	if direct != through {
		t.Errorf("elect output differs\n--- direct ---\n%s\n--- through storegate ---\n%s", direct, through)
	}
}

// dropClientLogs removes client/v3's JSON log lines (timestamps, pointers)
// from etcdctl's stderr, keeping what etcdctl itself printed.
func dropClientLogs(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.HasPrefix(l, `{"level":`) {
			b.WriteString(l)
		}
	}
	return b.String()
}
