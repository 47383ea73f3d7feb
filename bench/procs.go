package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/storegate/storegate/internal/loopback"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process of the bench: etcd, etcd's gRPC proxy or the
// gateway. It runs in its own process group, dies with the bench (parent
// death signal), and writes its output to a log file in the run directory.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string

	done chan struct{} // closed when the process has exited
	err  error         // its exit status, set before done is closed
}

// startProc starts bin with args; stdout and stderr go to logPath. A nil
// env leaves the child the bench's environment; otherwise the child gets
// the bench's environment without its OTEL_* variables, plus env, so that
// only what the bench sets configures the child's OpenTelemetry SDK. The
// bench's own environment is never changed.
func startProc(name, logPath, bin string, env []string, args ...string) (*proc, error) {
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if env != nil {
		cmd.Env = append(withoutOTel(os.Environ()), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

// withoutOTel returns environ without its OTEL_* variables.
func withoutOTel(environ []string) []string {
	return slices.DeleteFunc(slices.Clone(environ), func(kv string) bool { return strings.HasPrefix(kv, "OTEL_") })
}

// exited reports whether the process has exited, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		if p.err == nil {
			return true, errors.New("exited")
		}
		return true, p.err
	default:
		return false, nil
	}
}

// stop ends the process group: SIGTERM, then SIGKILL after a grace period.
func (p *proc) stop() {
	pgid := p.cmd.Process.Pid // the group leader: Setpgid makes pgid == pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// tail returns the last n lines of the process's log, each cut to 300 bytes.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + " [...]"
		}
	}
	return strings.Join(lines, "\n")
}

// failure wraps err with the process's name and the tail of its log.
func (p *proc) failure(err error) error {
	t := p.tail(20)
	if t == "" {
		return fmt.Errorf("%s: %w (log %s is empty)", p.name, err, p.log)
	}
	return fmt.Errorf("%s: %w\n--- last lines of %s ---\n%s", p.name, err, p.log, t)
}

// waitReady polls check until it succeeds, the process exits or the deadline
// passes. There are no fixed sleeps: the poll interval only paces retries.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if gone, err := p.exited(); gone {
			return p.failure(fmt.Errorf("exited before it was ready: %v", err))
		}
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return p.failure(fmt.Errorf("not ready after %v: %v", timeout, last))
		case <-p.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cpuTime is the CPU time (user + system, all threads) the process has used
// so far, from /proc/PID/stat.
func (p *proc) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// fields are counted from the last ')'. utime and stime are fields 14
	// and 15, i.e. the 12th and 13th after the name.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat format")
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / time.Duration(clockTicks()), nil
}

// clockTicks is the kernel's USER_HZ (sysconf(_SC_CLK_TCK)), the unit of
// /proc CPU times, read from the auxiliary vector; 100 when unavailable.
var clockTicks = sync.OnceValue(func() uint64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	for ; len(b) >= 16; b = b[16:] {
		if binary.NativeEndian.Uint64(b) == atClkTck {
			if v := binary.NativeEndian.Uint64(b[8:]); v > 0 {
				return v
			}
		}
	}
	return 100
})

// freePorts returns n distinct free TCP ports on 127.0.0.1, outside the
// ephemeral range (see internal/loopback); a port may still be taken by
// another program before a child binds it, which then fails to start with
// a clear error.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		p, err := loopback.Port()
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

// etcdProc starts a one-member etcd serving client TLS on clientPort with
// client certificate authentication, and peer traffic (unused) on peerPort.
func etcdProc(bin, dir string, clientPort, peerPort int, pk *pki, cert svid, fsync bool) (*proc, string, error) {
	client := fmt.Sprintf("https://127.0.0.1:%d", clientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	args := []string{
		"--name", "bench",
		"--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench=" + peer,
		"--initial-cluster-state", "new",
		"--cert-file", cert.cert,
		"--key-file", cert.key,
		"--trusted-ca-file", pk.caFile(),
		"--client-cert-auth",
		"--quota-backend-bytes", strconv.Itoa(8 << 30),
		"--log-level", "error",
	}
	if !fsync {
		args = append(args, "--unsafe-no-fsync")
	}
	p, err := startProc("etcd", filepath.Join(dir, "etcd.log"), bin, nil, args...)
	return p, client, err
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
