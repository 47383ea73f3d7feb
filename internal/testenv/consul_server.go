package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// ConsulServerSpec is a real Consul 1.14.11 agent as a single server
// (-server -bootstrap-expect=1) keeping its state in DataDir, so that it
// survives a restart (SIGTERM or kill -9) with every acknowledged write; a
// -dev agent starts empty. Its HTTP API is plain on HTTPAddr, and its other
// listeners stay on the same ports across restarts.
type ConsulServerSpec struct {
	// Bin is the consul binary (default: bin/consul, built when missing).
	Bin string
	// DataDir holds the server's Raft log and snapshots (required).
	DataDir  string
	HTTPAddr string // default: a free loopback port
	Node     string // default storegate-test
	Args     []string
}

// StartConsulServer starts the server and returns once it has a leader
// (itself). Raft runs with raft_multiplier 1, so that it elects itself
// again within about a second of a restart.
func StartConsulServer(ctx context.Context, s ConsulServerSpec) (*Consul, error) {
	if s.DataDir == "" {
		return nil, fmt.Errorf("testenv: a Consul server needs a data directory")
	}
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		return nil, err
	}
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
	args := []string{"agent", "-server", "-bootstrap-expect=1", "-data-dir=" + s.DataDir,
		"-bind=127.0.0.1", "-client=127.0.0.1", "-http-port=" + httpPort,
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-node=" + s.Node, "-log-level=warn",
		"-hcl=performance { raft_multiplier = 1 }", "-hcl=disable_update_check = true"}
	for _, flag := range []string{"-serf-lan-port", "-serf-wan-port", "-server-port"} {
		p, err := Port()
		if err != nil {
			return nil, err
		}
		args = append(args, flag+"="+strconv.Itoa(p))
	}
	c := &Consul{HTTPAddr: s.HTTPAddr, Proc: &Proc{Name: "consul server", Bin: s.Bin, Args: append(args, s.Args...)}}
	if err := c.Proc.Start(); err != nil {
		return nil, err
	}
	if err := c.WaitReady(ctx, 60*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ConsulServer starts a single Consul server on a data directory (default:
// a temporary one) that survives restarts.
func (e *Env) ConsulServer(s ConsulServerSpec) *Consul {
	e.t.Helper()
	if s.DataDir == "" {
		s.DataDir = e.t.TempDir()
	}
	c, err := StartConsulServer(e.t.Context(), s)
	e.check(err)
	e.t.Cleanup(c.Close)
	e.logOnFailure(c.Proc)
	return c
}
