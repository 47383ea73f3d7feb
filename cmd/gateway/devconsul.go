package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// consulAgent is the local Consul agent `gateway dev` runs behind the
// gateway: `consul agent -dev` on loopback, in memory.
type consulAgent struct {
	cmd  *exec.Cmd
	done chan error
}

// findConsul returns the consul binary to run: the flag's value, else
// bin/consul, else consul on $PATH; "" when there is none.
func findConsul(flag string) string {
	if flag != "" {
		return flag
	}
	if p, err := filepath.Abs(filepath.Join("bin", "consul")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p
	}
	return ""
}

func freeLoopbackPort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, p, err := net.SplitHostPort(l.Addr().String())
	return p, err
}

// startConsulAgent starts the agent with its HTTP API on httpAddr and waits
// until it has a leader.
func startConsulAgent(ctx context.Context, bin, httpAddr string, logs io.Writer) (*consulAgent, error) {
	_, httpPort, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return nil, fmt.Errorf("dev: consul http address: %w", err)
	}
	args := []string{"agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-http-port=" + httpPort,
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-node=storegate-dev", "-log-level=warn"}
	for _, flag := range []string{"-serf-lan-port", "-serf-wan-port", "-server-port"} {
		p, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		args = append(args, flag+"="+p)
	}
	a := &consulAgent{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	a.cmd.Stdout, a.cmd.Stderr = logs, logs
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("dev: starting consul: %w", err)
	}
	go func() { a.done <- a.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/v1/status/leader")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), ":") {
				return a, nil
			}
		}
		select {
		case err := <-a.done:
			return nil, fmt.Errorf("dev: consul exited: %v", err)
		case <-ctx.Done():
			a.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, errors.New("dev: consul had no leader after 60s")
		}
	}
}

func (a *consulAgent) stop() {
	if a == nil {
		return
	}
	_ = a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}
