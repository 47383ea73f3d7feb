package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/storegate/storegate/mtls"
)

// This file holds what the suites, the bench and `gateway dev` needed when
// they moved onto testenv (storegate issue 12).

// LaunchGateway writes the configuration and starts the gateway on it,
// without waiting for it to be ready (see Gateway.WaitReady): for a test of
// a gateway that is meant not to become ready.
func LaunchGateway(s GatewaySpec) (*Gateway, error) {
	b, err := s.Config.Marshal()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(s.Dir, "storegate.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, err
	}
	if s.LogLevel == "" {
		s.LogLevel = "debug"
	}
	if s.ReadyTimeout == 0 {
		s.ReadyTimeout = 3 * time.Minute
	}
	g := &Gateway{Spec: s, Etcd: s.Config.Listen.Etcd, Consul: s.Config.Listen.Consul, Admin: s.Config.Listen.Admin, ConfigPath: path}
	g.Proc = &Proc{Name: "gateway " + g.Admin, Bin: s.Bin, Args: []string{"serve", "--config", path, "--log-level", s.LogLevel}, Echo: s.Echo}
	if s.Env != nil || s.Environ != nil {
		base := s.Environ
		if base == nil {
			base = os.Environ()
		}
		g.Proc.Env = append(append([]string(nil), base...), s.Env...)
	}
	if err := g.Proc.Start(); err != nil {
		return nil, err
	}
	return g, nil
}

// LaunchGateway is LaunchGateway, failing the test on error and stopping
// the gateway when the test ends.
func (e *Env) LaunchGateway(s GatewaySpec) *Gateway {
	e.t.Helper()
	if s.Dir == "" {
		s.Dir = e.t.TempDir()
	}
	g, err := LaunchGateway(s)
	e.check(err)
	e.t.Cleanup(g.Close)
	e.logOnFailure(g.Proc)
	return g
}

// ExitErr is how the last run ended: nil while it runs or when it exited
// with status 0, else its *exec.ExitError (a signal, a status).
func (p *Proc) ExitErr() error {
	select {
	case <-p.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	default:
		return nil
	}
}

// Buffer is a bytes.Buffer safe for concurrent writers and readers: the
// output of a command a test runs itself (etcdctl, consul).
type Buffer struct{ syncBuffer }

// RestartMembers starts the stopped or killed members idx together (a
// cluster restarting from all of its members down needs them all for a
// quorum), each on its data, and waits until they answer.
func (e *Etcd) RestartMembers(ctx context.Context, idx ...int) error {
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for j, i := range idx {
		m := e.Members[i]
		if m.Proc != nil {
			m.Proc.Stop(10 * time.Second)
			m.Proc.Args = withFlag(m.Proc.Args, "--initial-cluster-state", "existing")
			errs[j] = m.Proc.Start()
			continue
		}
		if m.Server != nil {
			m.Server.Close()
			m.Server = nil
		}
		m.cfg.ClusterState = embed.ClusterStateFlagExisting
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[j] = m.startEmbedded(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return e.WaitReady(ctx, 60*time.Second)
}

// memberAddrs is member i's peer and client host:port: the spec's fixed
// ones, else free ports.
func (s EtcdSpec) memberAddrs(i int) (peer, client string, err error) {
	if len(s.PeerAddrs) > i && len(s.ClientAddrs) > i {
		return s.PeerAddrs[i], s.ClientAddrs[i], nil
	}
	if len(s.PeerAddrs) > 0 || len(s.ClientAddrs) > 0 {
		return "", "", fmt.Errorf("testenv: etcd member %d: ClientAddrs and PeerAddrs need one address each per member", i)
	}
	peer, err1 := Addr()
	client, err2 := Addr()
	return peer, client, errors.Join(err1, err2)
}

// bin is the etcd binary of binary members.
func (s EtcdSpec) bin() (string, error) {
	if s.Bin != "" {
		return s.Bin, nil
	}
	return Tool("etcd")
}

// IssueAll issues (again) the gateway's, etcd's and the callers' SVIDs,
// valid for ttl.
func (p *PKI) IssueAll(ttl time.Duration, callers ...string) error {
	if err := p.Issue("gateway", "/storegate", true, ttl); err != nil {
		return err
	}
	if err := p.Issue("etcd", "/etcd", true, ttl); err != nil {
		return err
	}
	for _, c := range callers {
		if err := p.Issue(c, "/"+c, false, ttl); err != nil {
			return err
		}
	}
	return nil
}

// OpenPKI is the PKI in dir, made there when dir has no CA yet; an existing
// CA is kept (commands pasted from an earlier run keep working) and the
// SVIDs are issued afresh, valid for ttl: `gateway dev`'s.
func OpenPKI(dir string, ttl time.Duration, callers ...string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := mtls.InitCA(dir, TrustDomain); err != nil && !errors.Is(err, mtls.ErrCAExists) {
		return nil, err
	}
	p := &PKI{Dir: dir}
	if err := p.IssueAll(ttl, callers...); err != nil {
		return nil, err
	}
	return p, nil
}

// ClockTicks is the kernel's USER_HZ, the unit of the /proc CPU times that
// Proc.CPUTime reads.
func ClockTicks() uint64 { return clockTicks() }

// permanent is a condition's error that no retry can change.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err, returned by a condition of Eventually, as one that
// no retry can change (the process waited on has exited): Eventually
// returns it at once.
func Permanent(err error) error { return permanent{err} }

// Main is a test package's TestMain body: it builds the gateway from this
// tree (with the race detector when race is set) into a temporary
// directory, sets *gatewayBin, runs m and removes the directory; the exit
// code is m's, or 1 when the build fails. Use:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m, raceEnabled, &gatewayBin)) }
func Main(m interface{ Run() int }, race bool, gatewayBin *string) int {
	tmp, err := os.MkdirTemp("", "storegate-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	*gatewayBin = filepath.Join(tmp, "gateway")
	if err := BuildGateway(*gatewayBin, race); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// MainWithPlugins is Main for packages whose gateways run the example
// plugins: it also builds them when one is missing (PluginDir) and sets
// *pluginDir before m runs.
func MainWithPlugins(m interface{ Run() int }, race bool, gatewayBin, pluginDir *string) int {
	return Main(withPlugins{m, pluginDir}, race, gatewayBin)
}

type withPlugins struct {
	m   interface{ Run() int }
	dir *string
}

func (w withPlugins) Run() int {
	dir, err := PluginDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*w.dir = dir
	return w.m.Run()
}
