package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// ConsulSpec is a real Consul 1.14.11 agent on loopback, its HTTP API plain
// on HTTPAddr: in -dev mode (in memory, empty after a restart), or, with
// DataDir, a single server (-server -bootstrap-expect=1) keeping its state
// there, so that a restart (SIGTERM or kill -9) loses no acknowledged
// write. Its other listeners stay on the same ports across restarts.
type ConsulSpec struct {
	// DataDir, when set, runs a single server on it instead of -dev; Raft
	// runs with raft_multiplier 1, so it elects itself again within about
	// a second of a restart.
	DataDir string
	// Bin is the consul binary (default: bin/consul, built when missing).
	Bin string
	// HTTPAddr is where the HTTP API listens (default: a free port).
	HTTPAddr string
	Node     string // default storegate-test
	Args     []string
	// Echo receives the agent's output as well.
	Echo io.Writer
	// LogFile, when set, receives the agent's output as well.
	LogFile string
}

// Consul is a running agent.
type Consul struct {
	HTTPAddr string // host:port
	Proc     *Proc
}

// StartConsul starts the agent and returns once it has a leader.
func StartConsul(ctx context.Context, s ConsulSpec) (*Consul, error) {
	if s.Bin == "" {
		bin, err := Tool("consul")
		if err != nil {
			return nil, err
		}
		s.Bin = bin
	}
	if s.HTTPAddr == "" {
		a, err := Addr()
		if err != nil {
			return nil, err
		}
		s.HTTPAddr = a
	}
	if s.Node == "" {
		s.Node = "storegate-test"
	}
	_, httpPort, err := net.SplitHostPort(s.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("consul http address: %w", err)
	}
	mode := []string{"-dev"}
	if s.DataDir != "" {
		if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
			return nil, err
		}
		mode = []string{"-server", "-bootstrap-expect=1", "-data-dir=" + s.DataDir,
			"-hcl=performance { raft_multiplier = 1 }", "-hcl=disable_update_check = true"}
	}
	args := []string{"agent", "-bind=127.0.0.1", "-client=127.0.0.1", "-http-port=" + httpPort,
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-node=" + s.Node, "-log-level=warn"}
	for _, flag := range []string{"-serf-lan-port", "-serf-wan-port", "-server-port"} {
		p, err := Port()
		if err != nil {
			return nil, err
		}
		args = append(args, flag+"="+strconv.Itoa(p))
	}
	args = append(args, mode...)
	c := &Consul{HTTPAddr: s.HTTPAddr, Proc: &Proc{Name: "consul", Bin: s.Bin, Args: append(args, s.Args...), Echo: s.Echo, LogFile: s.LogFile}}
	if err := c.Proc.Start(); err != nil {
		return nil, err
	}
	if err := c.WaitReady(ctx, 60*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// WaitReady waits until the agent has a leader.
func (c *Consul) WaitReady(ctx context.Context, timeout time.Duration) error {
	return Eventually(ctx, timeout, func(ctx context.Context) error {
		if gone, err := c.Proc.Exited(); gone {
			return Permanent(c.Proc.Failure(fmt.Errorf("exited: %v", err)))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.HTTPAddr+"/v1/status/leader", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), ":") {
			return errors.New("consul: no leader yet")
		}
		return nil
	})
}

// Restart stops the agent and starts it again (a -dev agent starts empty).
func (c *Consul) Restart(ctx context.Context) error {
	c.Proc.Stop(15 * time.Second)
	if err := c.Proc.Start(); err != nil {
		return err
	}
	return c.WaitReady(ctx, 60*time.Second)
}

// Close stops the agent.
func (c *Consul) Close() { c.Proc.Stop(15 * time.Second) }
