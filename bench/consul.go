package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
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

// consulBench measures Consul KV GET (one key) and PUT (100 bytes over 1000
// keys) direct to a Consul agent and through storegate's Consul front, side
// by side, and prints its own table.
func consulBench(ctx context.Context, o options, dir string, ports []int, consulBin, gatewayBin, etcdURL string, pk *pki, certs map[string]svid) (bool, error) {
	httpPort := ports[0]
	agent, err := startProc("consul", filepath.Join(dir, "consul.log"), consulBin, "agent", "-dev",
		"-bind=127.0.0.1", "-client=127.0.0.1", "-http-port="+strconv.Itoa(httpPort),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-log-level=error", "-node=storegate-bench",
		"-serf-lan-port="+strconv.Itoa(ports[1]), "-serf-wan-port="+strconv.Itoa(ports[2]), "-server-port="+strconv.Itoa(ports[3]))
	if err != nil {
		return false, err
	}
	defer agent.stop()
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	direct := &consulTarget{name: direct, base: base, c: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	if err := agent.waitReady(ctx, 60*time.Second, func(ctx context.Context) error {
		b, err := direct.do(ctx, http.MethodGet, "/v1/status/leader", nil)
		if err == nil && !strings.Contains(string(b), ":") {
			err = fmt.Errorf("no leader yet")
		}
		return err
	}); err != nil {
		return false, err
	}
	if _, err := direct.do(ctx, http.MethodPut, "/v1/kv"+rangeKey, []byte(value)); err != nil {
		return false, fmt.Errorf("seed: %w", err)
	}

	g := gatewayVariant{name: storegate, intentions: o.intentions[0], cache: true,
		consulListen: fmt.Sprintf("127.0.0.1:%d", ports[4]), consulUpstream: base}
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
	sg := &consulTarget{name: storegate, base: "https://" + g.consulListen, hop: gw,
		c: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}}
	if _, err := sg.do(ctx, http.MethodGet, "/v1/kv"+rangeKey, nil); err != nil {
		return false, gw.failure(fmt.Errorf("ready, but a GET of %s through the Consul front failed: %w", rangeKey, err))
	}

	targets := []*consulTarget{direct, sg}
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
					results[k].merge(t.measure(ctx, agent, op, conc, o.warmup, o.duration))
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

// reportConsul prints the Consul table and the goal line: storegate at
// least 0.8 of direct throughput in every case.
func reportConsul(w io.Writer, o options, results map[caseKey]*sample) bool {
	fmt.Fprintf(w, "\nConsul KV (agent -dev; get = one key, put = 100-byte value over %d keys; storegate over mTLS, agent direct over plain HTTP)\n", putKeys)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "op\tconc\ttarget\tops/s\tp50\tp99\tvs-direct\tgateway-CPU/req\tconsul-CPU/req")
	failed := false
	lowest, lowestWhat := 0.0, ""
	for _, op := range []opKind{opRange, opPut} {
		name := map[opKind]string{opRange: "get", opPut: "put"}[op]
		for _, conc := range o.concs {
			d := results[caseKey{op, conc, direct}]
			for _, tn := range []string{direct, storegate} {
				s := results[caseKey{op, conc, tn}]
				if !good(s) {
					failed = true
					fmt.Fprintf(tw, "%s\t%d\t%s\tFAILED: %v\n", name, conc, tn, s.err)
					continue
				}
				ratio, hop := "1.00x", "-"
				if tn == storegate && good(d) {
					r := s.throughput() / d.throughput()
					ratio = fmt.Sprintf("%.2fx", r)
					hop = s.perOp(s.hopCPU).Round(time.Microsecond).String()
					if lowestWhat == "" || r < lowest {
						lowest, lowestWhat = r, fmt.Sprintf("%s conc=%d", name, conc)
					}
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%v\t%v\t%s\t%s\t%v\n", name, conc, tn, s.throughput(),
					s.quantile(0.5).Round(10*time.Microsecond), s.quantile(0.99).Round(10*time.Microsecond),
					ratio, hop, s.perOp(s.etcdCPU).Round(time.Microsecond))
			}
		}
	}
	tw.Flush()
	if lowestWhat != "" {
		verdict := "MET"
		if lowest < 0.8 {
			verdict = "NOT MET"
		}
		fmt.Fprintf(w, "goal: storegate >= 0.8x direct Consul KV throughput in every case: %s (lowest %.2fx, %s)\n", verdict, lowest, lowestWhat)
	}
	return failed
}
