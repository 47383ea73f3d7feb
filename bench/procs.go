package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/storegate/storegate/internal/testenv"
)

// proc is a child process of the bench: etcd, etcd's gRPC proxy, Consul
// or the gateway, a testenv.Proc (its own process group, dead with the
// bench, kill -9 and CPU time) writing its output to a log file in the run
// directory.
type proc struct{ *testenv.Proc }

// startProc starts bin with args; stdout and stderr go to logPath. A nil
// env leaves the child the bench's environment; otherwise the child gets
// the bench's environment without its OTEL_* variables, plus env, so that
// only what the bench sets configures the child's OpenTelemetry SDK. The
// bench's own environment is never changed.
func startProc(name, logPath, bin string, env []string, args ...string) (*proc, error) {
	p := &testenv.Proc{Name: name, Bin: bin, Args: args, LogFile: logPath}
	if env != nil {
		p.Env = append(withoutOTel(os.Environ()), env...)
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return &proc{p}, nil
}

// withoutOTel returns environ without its OTEL_* variables.
func withoutOTel(environ []string) []string {
	return slices.DeleteFunc(slices.Clone(environ), func(kv string) bool { return strings.HasPrefix(kv, "OTEL_") })
}

// stop ends the process group: SIGTERM, then SIGKILL after a grace period.
func (p *proc) stop() { p.Stop(5 * time.Second) }

// failure wraps err with the process's name and the tail of its output.
func (p *proc) failure(err error) error { return p.Failure(err) }

// cpuTime is the CPU time (user + system, all threads) the process has used
// so far.
func (p *proc) cpuTime() (time.Duration, error) { return p.CPUTime() }

// waitReady waits (testenv.Eventually) until check succeeds, failing at
// once when the process exits, or after timeout.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	err := testenv.Eventually(ctx, timeout, func(ctx context.Context) error {
		if gone, err := p.Exited(); gone {
			return testenv.Permanent(p.failure(fmt.Errorf("exited before it was ready: %v", err)))
		}
		return check(ctx)
	})
	if gone, _ := p.Exited(); err != nil && !gone {
		return p.failure(err) // not ready in time: with the process's last lines
	}
	return err
}

// freePorts returns n distinct free TCP ports on 127.0.0.1, outside the
// ephemeral range (testenv, internal/loopback); a port may still be taken
// by another program before a child binds it, which then fails to start
// with a clear error.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		p, err := testenv.Port()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// lookBin finds the executable name in the bin directory.
func lookBin(dir, name, hint string) (string, error) {
	path, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	st, err := os.Stat(path)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s not found or not executable: %s", path, hint)
	}
	return path, nil
}

// startEtcd starts a one-member etcd of the binary (testenv) serving
// client TLS on clientPort with client certificate authentication (etcd's
// SVID from pk), and peer traffic (unused) on peerPort; it returns once the
// member answers. fsync off is --unsafe-no-fsync. etcd serves /metrics
// over plain HTTP at metricsURL (the watch fan-out reads its watcher count).
func startEtcd(ctx context.Context, bin, dir string, clientPort, peerPort int, metricsURL string, pk *pki, fsync bool) (*testenv.Etcd, *proc, error) {
	ec, err := testenv.StartEtcd(ctx, testenv.EtcdSpec{Binary: true, Bin: bin, Dir: dir, PKI: pk.PKI, NoFsync: !fsync,
		ClientAddrs: []string{fmt.Sprintf("127.0.0.1:%d", clientPort)}, PeerAddrs: []string{fmt.Sprintf("127.0.0.1:%d", peerPort)},
		Args: []string{"--quota-backend-bytes", strconv.Itoa(8 << 30), "--listen-metrics-urls", metricsURL}})
	if err != nil {
		return nil, nil, err
	}
	return ec, &proc{ec.Members[0].Proc}, nil
}

// grpcProxyProc starts etcd's own gRPC proxy (`etcd grpc-proxy start`) on
// port, serving TLS with client certificate authentication and talking TLS
// to etcd with its own certificate.
func grpcProxyProc(bin, dir string, port int, etcdEndpoint string, pk *pki, cert svid) (*proc, string, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{
		"grpc-proxy", "start",
		"--endpoints", etcdEndpoint,
		"--listen-addr", addr,
		"--advertise-client-url", addr,
		"--data-dir", filepath.Join(dir, "grpc-proxy-data"),
		// TLS to etcd.
		"--cert", cert.cert,
		"--key", cert.key,
		"--cacert", pk.caFile(),
		// TLS from clients; a trusted CA makes client certificates required.
		"--cert-file", cert.cert,
		"--key-file", cert.key,
		"--trusted-ca-file", pk.caFile(),
	}
	p, err := startProc("grpc-proxy", filepath.Join(dir, "grpc-proxy.log"), bin, nil, args...)
	return p, "https://" + addr, err
}
