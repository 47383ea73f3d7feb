package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/storegate/storegate/internal/testenv"
)

// putBody is the 100-byte value Consul PUTs write.
var putBody = []byte(value)

// consulTarget is an HTTP endpoint of Consul's KV API: the agent itself, or
// storegate's Consul front.
type consulTarget struct {
	name string
	base string // http(s)://host:port
	hop  *proc  // the gateway; nil for direct
	c    *http.Client
}

// consulPorts is how many ports consulBench takes: the agent's HTTP port,
// three left unused (testenv picks the agent's serf and server ports), the
// gateway's Consul front, etcd front and admin listener, and the agent's
// HTTPS port.
const consulPorts = 8

// consulBench measures Consul KV GET (one key) and PUT (100 bytes over 1000
// keys) direct to a Consul agent and through storegate's Consul front, side
// by side, and prints its own table.
func consulBench(ctx context.Context, o options, dir string, ports []int, consulBin, gatewayBin, etcdURL string, pk *pki, certs map[string]svid) (bool, error) {
	httpPort, httpsPort := ports[0], ports[7]
	// The agent also serves HTTPS and requires client certificates: the
	// like-for-like baseline for a caller that talks mTLS to storegate. Its
	// HTTP API is on a unix socket too, which the gateway uses, as a
	// gateway beside its local agent would (upstreams.consul.socket).
	socket := filepath.Join(dir, "consul-http.sock")
	agentTLS := fmt.Sprintf(`addresses { http = "127.0.0.1 unix://%s" }
ports { https = %d }
tls { defaults { ca_file = %q, cert_file = %q, key_file = %q, verify_incoming = true } }`,
		socket, httpsPort, pk.caFile(), certs["consul"].cert, certs["consul"].key)
	logf, err := os.Create(filepath.Join(dir, "consul.log"))
	if err != nil {
		return false, err
	}
	defer logf.Close()
	c, err := testenv.StartConsul(ctx, testenv.ConsulSpec{Bin: consulBin, HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
		Node: "storegate-bench", Args: []string{"-hcl", agentTLS, "-log-level=error"}, Echo: logf})
	if err != nil {
		return false, err
	}
	defer c.Close()
	agent := &proc{c.Proc}
	base := "http://" + c.HTTPAddr
	direct := &consulTarget{name: direct, base: base, c: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	if _, err := direct.do(ctx, http.MethodPut, "/v1/kv"+rangeKey, []byte(value)); err != nil {
		return false, fmt.Errorf("seed: %w", err)
	}

	g := gatewayVariant{name: storegate, intentions: o.intentions[0], cache: true,
		consulListen: fmt.Sprintf("127.0.0.1:%d", ports[4]), consulUpstream: base, consulSocket: socket, pprof: o.consulProfile != ""}
	gw, _, admin, err := gatewayProc(gatewayBin, dir, g, o.policies, ports[5], ports[6], etcdURL, pk, certs["gateway"])
	if err != nil {
		return false, err
	}
	defer gw.stop()
	if err := gw.waitReady(ctx, 60*time.Second, readyz(admin)); err != nil {
		return false, err
	}
	tlsConf, err := pk.clientTLS(certs["bench"])
	if err != nil {
		return false, err
	}
	directTLS := &consulTarget{name: directHTTPS, base: fmt.Sprintf("https://127.0.0.1:%d", httpsPort),
		c: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}}
	if _, err := directTLS.do(ctx, http.MethodGet, "/v1/kv"+rangeKey, nil); err != nil {
		return false, fmt.Errorf("GET %s from the agent over HTTPS: %w", rangeKey, err)
	}
	sg := &consulTarget{name: storegate, base: "https://" + g.consulListen, hop: gw,
		c: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}}
	if _, err := sg.do(ctx, http.MethodGet, "/v1/kv"+rangeKey, nil); err != nil {
		return false, gw.failure(fmt.Errorf("ready, but a GET of %s through the Consul front failed: %w", rangeKey, err))
	}

	targets := []*consulTarget{direct, directTLS, sg}
	results := map[caseKey]*sample{}
	for _, op := range []opKind{opRange, opPut} {
		for _, conc := range o.concs {
			for round := range o.rounds {
				for i := range targets {
					t := targets[(i+round)%len(targets)]
					if ctx.Err() != nil {
						return false, fmt.Errorf("interrupted")
					}
					fmt.Fprintf(os.Stderr, "bench: consul %s conc=%d %s round %d/%d\n", op, conc, t.name, round+1, o.rounds)
					k := caseKey{op: op, conc: conc, target: t.name}
					if results[k] == nil {
						results[k] = &sample{}
					}
					var prof func() error
					if t == sg && o.consulProfile != "" {
						prof = profileDuring(ctx, admin, o.warmup+o.duration,
							fmt.Sprintf("%s.%s-%d-r%d", o.consulProfile, op, conc, round+1))
					}
					results[k].merge(t.measure(ctx, agent, op, conc, o.warmup, o.duration))
					if prof != nil {
						if err := prof(); err != nil {
							return false, err
						}
					}
				}
			}
		}
	}
	sortLatencies(results)
	return reportConsul(os.Stdout, o, results), nil
}

func (t *consulTarget) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, t.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := t.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	return b, err
}

// measure is measure() for Consul: warm-up, then a closed-loop run with the
// CPU of the hop and of the agent read around it.
func (t *consulTarget) measure(ctx context.Context, agent *proc, op opKind, conc int, warmup, d time.Duration) sample {
	if warmup > 0 {
		if w := t.load(ctx, op, conc, warmup); w.errs > 0 {
			return w
		}
	}
	hop0, errH := cpuOf(t.hop)
	ag0, errA := agent.cpuTime()
	s := t.load(ctx, op, conc, d)
	hop1, errH1 := cpuOf(t.hop)
	ag1, errA1 := agent.cpuTime()
	s.cpuErr = firstErr(errH, errA, errH1, errA1)
	s.hopCPU, s.etcdCPU = hop1-hop0, ag1-ag0
	return s
}

func (t *consulTarget) load(ctx context.Context, op opKind, conc int, d time.Duration) sample {
	return closedLoop(ctx, conc, d, func(ctx context.Context, _, i int) error {
		var err error
		switch op {
		case opRange:
			_, err = t.do(ctx, http.MethodGet, "/v1/kv"+rangeKey, nil)
		case opPut:
			_, err = t.do(ctx, http.MethodPut, fmt.Sprintf("/v1/kv%s%d", rangeKey, i%putKeys), putBody)
		}
		return err
	})
}

// directHTTPS is the Consul agent's own HTTPS listener with client
// certificates required: what a caller without storegate would use to get
// mTLS, and so the like-for-like baseline.
const directHTTPS = "direct-https"

// reportConsul prints the Consul table and the goal line: storegate at
// least 0.8 of direct throughput at conc 32 (goalConc), GET and PUT, judged
// against the agent over mTLS (the caller's TLS cost is then on both sides)
// and also shown against the agent over plain HTTP.
func reportConsul(w io.Writer, o options, results map[caseKey]*sample) bool {
	fmt.Fprintf(w, "\nConsul KV (agent -dev; get = one key, put = 100-byte value over %d keys)\n", putKeys)
	fmt.Fprintln(w, "direct = the agent over plain HTTP; direct-https = the agent over HTTPS requiring client certificates (HTTP/2, as consul/api);")
	fmt.Fprintln(w, "storegate = mTLS (HTTP/2) to the gateway, which forwards to the agent over plain HTTP on its unix socket (upstreams.consul.socket), as to a local agent")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "op\tconc\ttarget\tops/s\tp50\tp99\tvs-direct\tvs-direct-https\tgateway-CPU/req\tconsul-CPU/req")
	failed := false
	type low struct {
		r    float64
		what string
	}
	var lowTLS, lowPlain low
	note := func(l *low, r float64, what string) {
		if l.what == "" || r < l.r {
			*l = low{r, what}
		}
	}
	for _, op := range []opKind{opRange, opPut} {
		name := map[opKind]string{opRange: "get", opPut: "put"}[op]
		for _, conc := range o.concs {
			d, dt := results[caseKey{op, conc, direct}], results[caseKey{op, conc, directHTTPS}]
			for _, tn := range []string{direct, directHTTPS, storegate} {
				s := results[caseKey{op, conc, tn}]
				if !good(s) {
					failed = true
					fmt.Fprintf(tw, "%s\t%d\t%s\tFAILED: %v\n", name, conc, tn, s.err)
					continue
				}
				vsPlain, vsTLS, hop := "-", "-", "-"
				what := fmt.Sprintf("%s conc=%d", name, conc)
				if tn != direct && good(d) {
					r := s.throughput() / d.throughput()
					vsPlain = fmt.Sprintf("%.2fx", r)
					if tn == storegate && conc == goalConc {
						note(&lowPlain, r, what)
					}
				}
				if tn == storegate && good(dt) {
					r := s.throughput() / dt.throughput()
					vsTLS = fmt.Sprintf("%.2fx", r)
					if conc == goalConc {
						note(&lowTLS, r, what)
					}
				}
				if tn == storegate {
					hop = s.perOp(s.hopCPU).Round(time.Microsecond).String()
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%v\t%v\t%s\t%s\t%s\t%v\n", name, conc, tn, s.throughput(),
					s.quantile(0.5).Round(10*time.Microsecond), s.quantile(0.99).Round(10*time.Microsecond),
					vsPlain, vsTLS, hop, s.perOp(s.etcdCPU).Round(time.Microsecond))
			}
		}
	}
	tw.Flush()
	verdict := func(l low) string {
		if l.r >= 0.8 {
			return "MET"
		}
		return "NOT MET"
	}
	if lowTLS.what != "" {
		fmt.Fprintf(w, "goal: storegate >= 0.8x direct-https Consul KV throughput at conc %d (get and put), against the agent over mTLS: %s (lowest %.2fx, %s)\n",
			goalConc, verdict(lowTLS), lowTLS.r, lowTLS.what)
	} else {
		fmt.Fprintf(w, "goal: storegate >= 0.8x direct-https Consul KV throughput at conc %d: UNKNOWN (not measured: needs -conc %d)\n", goalConc, goalConc)
	}
	if lowPlain.what != "" {
		fmt.Fprintf(w, "      against the agent over plain HTTP (no TLS for the caller at all): %s (lowest %.2fx, %s)\n",
			verdict(lowPlain), lowPlain.r, lowPlain.what)
	}
	return failed
}

// profileDuring starts a CPU profile of the gateway for d through its admin
// listener's /debug/pprof/profile; the function it returns waits for the
// profile and writes it to file.
func profileDuring(ctx context.Context, admin string, d time.Duration, file string) func() error {
	done := make(chan error, 1)
	go func() {
		secs := int(d.Round(time.Second) / time.Second)
		if secs < 1 {
			secs = 1
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, secs), nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- fmt.Errorf("cpu profile: %w", err)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("cpu profile: %s: %s", resp.Status, b)
		}
		if err == nil {
			err = os.WriteFile(file, b, 0o644)
		}
		if err == nil {
			// The allocations since the gateway started, for -sample_index=alloc_space.
			var a *http.Response
			if a, err = http.Get(admin + "/debug/pprof/allocs"); err == nil {
				b, err = io.ReadAll(a.Body)
				a.Body.Close()
				if err == nil {
					err = os.WriteFile(file+".allocs", b, 0o644)
				}
			}
		}
		done <- err
	}()
	return func() error { return <-done }
}
