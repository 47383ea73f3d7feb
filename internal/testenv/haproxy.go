package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// HAProxySpec is a real HAProxy (Debian's package) in TCP mode on loopback:
// one frontend per listener, each balancing round-robin over its backends.
type HAProxySpec struct {
	Dir       string
	Frontends []Frontend
}

// Frontend is one listener and the servers behind it.
type Frontend struct {
	Name   string
	Listen string // host:port; default a free port
	// Servers are the backends; each is health-checked by an HTTP GET of
	// its Check URL path on its CheckAddr (a gateway's /readyz on its admin
	// listener), so that a draining or dead replica leaves the rotation.
	Servers []Backend
}

// Backend is one server of a frontend.
type Backend struct {
	Name      string
	Addr      string // host:port
	CheckAddr string // host:port of the HTTP health check; "" for a TCP check
	CheckPath string // default /readyz
}

// HAProxy is a running balancer.
type HAProxy struct {
	Spec HAProxySpec
	Proc *Proc
	// Addrs maps each frontend's name to its listen address.
	Addrs map[string]string
}

// StartHAProxy writes the configuration and starts haproxy; it returns once
// every frontend accepts connections.
func StartHAProxy(ctx context.Context, s HAProxySpec) (*HAProxy, error) {
	bin, err := HAProxyBin()
	if err != nil {
		return nil, err
	}
	h := &HAProxy{Spec: s, Addrs: map[string]string{}}
	var b strings.Builder
	// Timeouts: clients hold gRPC streams and Consul blocking queries for
	// minutes; a dead server is found by its check in about a second, and
	// a connection refused by one is sent to another (redispatch).
	b.WriteString(`global
  maxconn 4096
defaults
  mode tcp
  timeout connect 2s
  timeout client 10m
  timeout server 10m
  timeout check 1s
  retries 2
  option redispatch
`)
	for i, f := range s.Frontends {
		if f.Listen == "" {
			a, err := Addr()
			if err != nil {
				return nil, err
			}
			f.Listen = a
			s.Frontends[i].Listen = a
		}
		h.Addrs[f.Name] = f.Listen
		fmt.Fprintf(&b, "frontend %s\n  bind %s\n  default_backend %s_servers\n", f.Name, f.Listen, f.Name)
		fmt.Fprintf(&b, "backend %s_servers\n  balance roundrobin\n", f.Name)
		httpCheck := false
		for _, sv := range f.Servers {
			httpCheck = httpCheck || sv.CheckAddr != ""
		}
		if httpCheck {
			path := "/readyz"
			if f.Servers[0].CheckPath != "" {
				path = f.Servers[0].CheckPath
			}
			fmt.Fprintf(&b, "  option httpchk GET %s\n  http-check expect status 200\n", path)
		}
		for _, sv := range f.Servers {
			line := fmt.Sprintf("  server %s %s check inter 250ms fall 2 rise 2", sv.Name, sv.Addr)
			if sv.CheckAddr != "" {
				host, port, err := net.SplitHostPort(sv.CheckAddr)
				if err != nil {
					return nil, err
				}
				line += fmt.Sprintf(" addr %s port %s", host, port)
			}
			b.WriteString(line + "\n")
		}
	}
	cfg := filepath.Join(s.Dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	h.Proc = &Proc{Name: "haproxy", Bin: bin, Args: []string{"-db", "-f", cfg}}
	if err := h.Proc.Start(); err != nil {
		return nil, err
	}
	for _, a := range h.Addrs {
		err := Eventually(ctx, 20*time.Second, func(ctx context.Context) error {
			if gone, err := h.Proc.Exited(); gone {
				return h.Proc.Failure(fmt.Errorf("exited: %v", err))
			}
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", a)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// Close stops haproxy.
func (h *HAProxy) Close() { h.Proc.Stop(5 * time.Second) }
