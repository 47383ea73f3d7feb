package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/storegate/storegate/mtls"
)

// EtcdSpec is a real etcd cluster on loopback serving clients over TLS with
// client certificates required (etcd's SVID from the PKI).
type EtcdSpec struct {
	// Members is the cluster's size (default 1).
	Members int
	// Binary runs bin/etcd as child processes (faults: kill -9, SIGSTOP);
	// otherwise the members are embedded in this process.
	Binary bool
	// Dir holds the members' data (and logs, for the binary).
	Dir string
	PKI *PKI
	// NoFsync turns fsync off (--unsafe-no-fsync), for the bench.
	NoFsync bool
	// Args are extra flags for the binary.
	Args []string
	// Embed adjusts every embedded member's config before it starts.
	Embed func(*embed.Config)
	// Echo receives the binary members' output as well.
	Echo *os.File
	// Bin is the etcd binary of binary members (default: bin/etcd, built
	// when missing).
	Bin string
	// ClientAddrs and PeerAddrs, when set, are the members' fixed client
	// and peer host:ports, one per member (default: free ports), for a
	// program whose users need stable addresses (`gateway dev`).
	ClientAddrs, PeerAddrs []string
}

// Etcd is a running cluster.
type Etcd struct {
	Spec      EtcdSpec
	Members   []*EtcdMember
	Endpoints []string // client URLs, one per member
}

// EtcdMember is one member: embedded (Server) or a child process (Proc).
type EtcdMember struct {
	Name      string
	ClientURL string
	PeerURL   string
	Proc      *Proc       // the binary
	Server    *embed.Etcd // embedded
	cfg       *embed.Config
}

// StartEtcd starts the cluster and returns once every member is ready.
func StartEtcd(ctx context.Context, s EtcdSpec) (*Etcd, error) {
	if s.Members == 0 {
		s.Members = 1
	}
	e := &Etcd{Spec: s}
	var initial []string
	for i := range s.Members {
		peer, client, err := s.memberAddrs(i)
		if err != nil {
			return nil, err
		}
		m := &EtcdMember{Name: "m" + strconv.Itoa(i), ClientURL: "https://" + client, PeerURL: "http://" + peer}
		e.Members = append(e.Members, m)
		e.Endpoints = append(e.Endpoints, m.ClientURL)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	cluster := strings.Join(initial, ",")
	errs := make([]error, len(e.Members))
	var wg sync.WaitGroup
	for i, m := range e.Members {
		dir := filepath.Join(s.Dir, m.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if s.Binary {
			bin, err := s.bin()
			if err != nil {
				return nil, err
			}
			args := []string{"--name", m.Name, "--data-dir", filepath.Join(dir, "data"),
				"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
				"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
				"--initial-cluster", cluster, "--initial-cluster-state", "new",
				"--cert-file", s.PKI.Cert("etcd"), "--key-file", s.PKI.Key("etcd"),
				"--trusted-ca-file", s.PKI.Bundle(), "--client-cert-auth", "--log-level", "error"}
			if s.NoFsync {
				args = append(args, "--unsafe-no-fsync")
			}
			m.Proc = &Proc{Name: "etcd " + m.Name, Bin: bin, Args: append(args, s.Args...), LogFile: filepath.Join(dir, "etcd.log")}
			if s.Echo != nil {
				m.Proc.Echo = s.Echo
			}
			if err := m.Proc.Start(); err != nil {
				e.Close()
				return nil, err
			}
			continue
		}
		cfg := embed.NewConfig()
		cfg.Name, cfg.Dir, cfg.LogLevel = m.Name, filepath.Join(dir, "data"), "error"
		cu, _ := url.Parse(m.ClientURL)
		pu, _ := url.Parse(m.PeerURL)
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialCluster = cluster
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = s.PKI.Cert("etcd"), s.PKI.Key("etcd")
		cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = s.PKI.Bundle(), true
		if s.NoFsync {
			cfg.UnsafeNoFsync = true
		}
		if s.Embed != nil {
			s.Embed(cfg)
		}
		m.cfg = cfg
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.startEmbedded(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		e.Close()
		return nil, err
	}
	if err := e.WaitReady(ctx, 60*time.Second); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (m *EtcdMember) startEmbedded(ctx context.Context) error {
	srv, err := embed.StartEtcd(m.cfg)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", m.Name, err)
	}
	m.Server = srv
	select {
	case <-srv.Server.ReadyNotify():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(60 * time.Second):
		return fmt.Errorf("etcd %s: not ready in 60s", m.Name)
	}
}

// Client is a client/v3 client of the given members (all if none), as the
// CA-issued SVID name (usually "etcd" or "gateway").
func (e *Etcd) Client(who string, members ...int) (*clientv3.Client, error) {
	eps := e.Endpoints
	if len(members) > 0 {
		eps = nil
		for _, i := range members {
			eps = append(eps, e.Endpoints[i])
		}
	}
	tc, err := e.clientTLS(who)
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{Endpoints: eps, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

func (e *Etcd) clientTLS(who string) (*tls.Config, error) {
	p := e.Spec.PKI
	return mtls.FileClientConfig(mtls.ClientFiles{Cert: p.Cert(who), Key: p.Key(who), CA: p.Bundle()})
}

// WaitReady waits until every running member answers Status.
func (e *Etcd) WaitReady(ctx context.Context, timeout time.Duration) error {
	for i, m := range e.Members {
		if !m.running() {
			continue
		}
		c, err := e.Client("etcd", i)
		if err != nil {
			return err
		}
		err = Eventually(ctx, timeout, func(ctx context.Context) error {
			if m.Proc != nil {
				if gone, err := m.Proc.Exited(); gone {
					return Permanent(m.Proc.Failure(fmt.Errorf("exited: %v", err)))
				}
			}
			_, err := c.Status(ctx, m.ClientURL)
			return err
		})
		c.Close()
		if err != nil {
			return fmt.Errorf("etcd %s: %w", m.Name, err)
		}
	}
	return nil
}

func (m *EtcdMember) running() bool {
	if m.Proc != nil {
		gone, _ := m.Proc.Exited()
		return !gone
	}
	return m.Server != nil
}

// Leader is the index of the member that leads, asked of the members that
// run.
func (e *Etcd) Leader(ctx context.Context) (int, error) {
	ids := map[uint64]int{}
	var leader uint64
	var last error
	for i, m := range e.Members {
		if !m.running() {
			continue
		}
		c, err := e.Client("etcd", i)
		if err != nil {
			return -1, err
		}
		st, err := c.Status(ctx, m.ClientURL)
		c.Close()
		if err != nil {
			last = err
			continue
		}
		ids[st.Header.MemberId] = i
		if st.Leader != 0 {
			leader = st.Leader
		}
	}
	if i, ok := ids[leader]; ok && leader != 0 {
		return i, nil
	}
	if last == nil {
		last = fmt.Errorf("leader %x is not among the running members", leader)
	}
	return -1, last
}

// Kill is kill -9 of a binary member, or a hard close of an embedded one.
func (e *Etcd) Kill(i int) {
	m := e.Members[i]
	if m.Proc != nil {
		m.Proc.Kill()
		return
	}
	if m.Server != nil {
		m.Server.Close()
		m.Server = nil
	}
}

// Restart starts a stopped or killed member again on its data, and waits
// until it answers.
func (e *Etcd) Restart(ctx context.Context, i int) error {
	m := e.Members[i]
	if m.Proc != nil {
		m.Proc.Stop(10 * time.Second)
		m.Proc.Args = withFlag(m.Proc.Args, "--initial-cluster-state", "existing")
		if err := m.Proc.Start(); err != nil {
			return err
		}
	} else {
		if m.Server != nil {
			m.Server.Close()
		}
		m.cfg.ClusterState = embed.ClusterStateFlagExisting
		if err := m.startEmbedded(ctx); err != nil {
			return err
		}
	}
	return e.WaitReady(ctx, 60*time.Second)
}

// withFlag sets flag's value in args.
func withFlag(args []string, flag, value string) []string {
	for i := range args {
		if args[i] == flag && i+1 < len(args) {
			args[i+1] = value
			return args
		}
	}
	return append(args, flag, value)
}

// Close stops every member.
func (e *Etcd) Close() {
	for _, m := range e.Members {
		if m.Proc != nil {
			m.Proc.Stop(10 * time.Second)
		}
		if m.Server != nil {
			m.Server.Close()
			m.Server = nil
		}
	}
}

// Logs is the binary members' output.
func (e *Etcd) Logs() string {
	var b strings.Builder
	for _, m := range e.Members {
		if m.Proc != nil {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", m.Name, m.Proc.Tail(40))
		}
	}
	return b.String()
}
