package mtls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// WorkloadSource is the gateway's identity from the SPIFFE Workload API
// (a SPIRE agent). Unlike workloadapi.NewX509Source it does not block start-up:
// the gateway serves its admin listener at once, /readyz says why there is no
// SVID yet, and the source keeps retrying (go-spiffe's backoff) until the
// agent answers. From then on it follows every rotation of the SVID and of
// the bundles (federated ones included); if the agent goes away it keeps the
// last SVID and bundles, which established connections do not need anyway,
// and picks up new ones when the agent is back.
type WorkloadSource struct {
	addr   string
	log    *slog.Logger
	src    atomic.Pointer[workloadapi.X509Source]
	ready  chan struct{}
	mu     sync.Mutex
	last   error // the latest error the Workload API client reported
	cancel context.CancelFunc
	done   chan struct{}
}

// StartWorkloadSource validates addr (empty: $SPIFFE_ENDPOINT_SOCKET) and
// starts connecting in the background.
func StartWorkloadSource(ctx context.Context, addr string, log *slog.Logger) (*WorkloadSource, error) {
	if log == nil {
		log = slog.Default()
	}
	opts := []workloadapi.ClientOption{}
	if addr != "" {
		if err := workloadapi.ValidateAddress(addr); err != nil {
			return nil, fmt.Errorf("mtls: workload API address %q: %w", addr, err)
		}
		opts = append(opts, workloadapi.WithAddr(addr))
	} else if a, ok := workloadapi.GetDefaultAddress(); ok {
		addr = a
	} else {
		return nil, fmt.Errorf("mtls: no workload API address given and %s is not set", workloadapi.SocketEnv)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &WorkloadSource{addr: addr, log: log, ready: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
		last: errors.New("connecting")}
	opts = append(opts, workloadapi.WithLogger(apiLogger{w}))
	go func() {
		defer close(w.done)
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(opts...))
		if err != nil {
			if ctx.Err() == nil {
				w.note(err)
			}
			return
		}
		w.src.Store(src)
		close(w.ready)
		if svid, err := src.GetX509SVID(); err == nil {
			log.Info("mtls: SVID from the workload API", "addr", addr, "id", svid.ID.String(),
				"not_after", svid.Certificates[0].NotAfter)
		}
	}()
	return w, nil
}

// Ready is closed once the first SVID and bundles have arrived.
func (w *WorkloadSource) Ready() <-chan struct{} { return w.ready }

func (w *WorkloadSource) note(err error) {
	w.mu.Lock()
	w.last = err
	w.mu.Unlock()
}

func (w *WorkloadSource) notYet() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Errorf("mtls: no SVID yet from the workload API at %s (retrying): %v", w.addr, w.last)
}

// GetX509SVID returns the current SVID, or why there is none yet.
func (w *WorkloadSource) GetX509SVID() (*x509svid.SVID, error) {
	src := w.src.Load()
	if src == nil {
		return nil, w.notYet()
	}
	return src.GetX509SVID()
}

// GetX509BundleForTrustDomain returns the current bundle of td (the
// gateway's own trust domain or a federated one).
func (w *WorkloadSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	src := w.src.Load()
	if src == nil {
		return nil, w.notYet()
	}
	return src.GetX509BundleForTrustDomain(td)
}

// Close stops the source.
func (w *WorkloadSource) Close() error {
	w.cancel()
	<-w.done
	if src := w.src.Load(); src != nil {
		return src.Close()
	}
	return nil
}

// apiLogger passes the Workload API client's messages to the gateway's log
// and remembers the latest error for /readyz.
type apiLogger struct{ w *WorkloadSource }

func (l apiLogger) Debugf(format string, args ...any) {
	l.w.log.Debug("workload API: " + fmt.Sprintf(format, args...))
}
func (l apiLogger) Infof(format string, args ...any) {
	l.w.log.Info("workload API: " + fmt.Sprintf(format, args...))
}
func (l apiLogger) Warnf(format string, args ...any) {
	l.w.note(fmt.Errorf(format, args...))
	l.w.log.Warn("workload API: "+fmt.Sprintf(format, args...), "addr", l.w.addr)
}
func (l apiLogger) Errorf(format string, args ...any) {
	l.w.note(fmt.Errorf(format, args...))
	l.w.log.Error("workload API: "+fmt.Sprintf(format, args...), "addr", l.w.addr)
}
