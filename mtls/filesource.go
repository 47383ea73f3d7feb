package mtls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FileConfig names the PEM files of a FileSource.
type FileConfig struct {
	// Cert is the gateway's X.509-SVID: the leaf first, then any
	// intermediates. Key is its private key, in any form ParsePrivateKey
	// reads (PKCS#8, PKCS#1 or SEC1, as etcd and Consul read them).
	Cert, Key string
	// Bundle is the trust bundle (CA certificates) of the SVID's own trust
	// domain, e.g. bundle.pem written by InitCA.
	Bundle string
	// Federated holds the bundle files of other trust domains.
	Federated map[spiffeid.TrustDomain]string
}

// FileSource is a Source read from PEM files. The files are watched and
// reloaded when they change, including when they are replaced by a rename
// (the safe way to rotate them) or through a symlink swap (Kubernetes
// secrets). A file that fails to load keeps the last good SVID or bundle in
// use, and the failure is logged.
type FileSource struct {
	cfg FileConfig
	log *slog.Logger
	td  spiffeid.TrustDomain // of the first SVID; its bundle is cfg.Bundle

	svid    atomic.Pointer[x509svid.SVID]
	bundles atomic.Pointer[x509bundle.Set]

	// Only the loader touches these: the constructor, then the watch loop.
	rawSVID   []byte
	rawBundle map[spiffeid.TrustDomain][]byte

	w         *watcher
	closeOnce sync.Once
}

// NewFileSource loads cfg's files, failing if any is missing or invalid, and
// watches them until ctx is done or Close is called.
func NewFileSource(ctx context.Context, cfg FileConfig, log *slog.Logger) (*FileSource, error) {
	if cfg.Cert == "" || cfg.Key == "" || cfg.Bundle == "" {
		return nil, errors.New("mtls: file source needs cert, key and bundle files")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &FileSource{cfg: cfg, log: log, rawBundle: map[spiffeid.TrustDomain][]byte{}}
	svid, raw, err := s.readSVID()
	if err != nil {
		return nil, err
	}
	s.td = svid.ID.TrustDomain()
	if _, ok := cfg.Federated[s.td]; ok {
		return nil, fmt.Errorf("mtls: federated bundle given for the SVID's own trust domain %q", s.td.Name())
	}
	s.svid.Store(svid)
	s.rawSVID = raw
	set := x509bundle.NewSet()
	for td, path := range s.bundlePaths() {
		b, raw, err := readBundle(td, path)
		if err != nil {
			return nil, err
		}
		set.Add(b)
		s.rawBundle[td] = raw
	}
	s.bundles.Store(set)
	s.logSVID("mtls: loaded SVID", svid)

	s.w, err = watch(ctx, s.paths(), s.reload, log)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// GetX509SVID returns the current SVID. It implements x509svid.Source.
func (s *FileSource) GetX509SVID() (*x509svid.SVID, error) {
	return s.svid.Load(), nil
}

// GetX509BundleForTrustDomain returns the current bundle of td. It
// implements x509bundle.Source.
func (s *FileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, ok := s.bundles.Load().Get(td)
	if !ok {
		return nil, fmt.Errorf("mtls: no bundle for trust domain %q", td.Name())
	}
	return b, nil
}

// Close stops watching the files; the source keeps serving what it has.
func (s *FileSource) Close() error {
	s.closeOnce.Do(s.w.stop)
	return nil
}

// bundlePaths is every bundle file by trust domain.
func (s *FileSource) bundlePaths() map[spiffeid.TrustDomain]string {
	m := make(map[spiffeid.TrustDomain]string, len(s.cfg.Federated)+1)
	for td, p := range s.cfg.Federated {
		m[td] = p
	}
	m[s.td] = s.cfg.Bundle
	return m
}

func (s *FileSource) paths() []string {
	p := []string{s.cfg.Cert, s.cfg.Key, s.cfg.Bundle}
	for _, b := range s.cfg.Federated {
		p = append(p, b)
	}
	return p
}

// reload re-reads every file; unchanged files are skipped, broken ones keep
// their last good value. Called from the watch loop only.
func (s *FileSource) reload() {
	svid, raw, err := s.readSVID()
	switch {
	case err != nil:
		s.log.Warn("mtls: keeping last good SVID", "cert", s.cfg.Cert, "key", s.cfg.Key, "err", err.Error())
	case bytes.Equal(raw, s.rawSVID):
	case svid.ID.TrustDomain() != s.td:
		s.log.Warn("mtls: keeping last good SVID", "cert", s.cfg.Cert,
			"err", fmt.Sprintf("mtls: new SVID %s is not in trust domain %q; restart to change trust domains", svid.ID, s.td.Name()))
	default:
		s.svid.Store(svid)
		s.rawSVID = raw
		s.logSVID("mtls: reloaded SVID", svid)
	}

	var next *x509bundle.Set
	for td, path := range s.bundlePaths() {
		b, raw, err := readBundle(td, path)
		switch {
		case err != nil:
			s.log.Warn("mtls: keeping last good bundle", "trust_domain", td.Name(), "file", path, "err", err.Error())
		case !bytes.Equal(raw, s.rawBundle[td]):
			if next == nil {
				next = x509bundle.NewSet(s.bundles.Load().Bundles()...)
			}
			next.Add(b)
			s.rawBundle[td] = raw
			s.log.Info("mtls: reloaded bundle", "trust_domain", td.Name(), "authorities", len(b.X509Authorities()))
		}
	}
	if next != nil {
		s.bundles.Store(next)
	}
}

func (s *FileSource) logSVID(msg string, svid *x509svid.SVID) {
	leaf := svid.Certificates[0]
	level := slog.LevelInfo
	if time.Now().After(leaf.NotAfter) {
		level, msg = slog.LevelWarn, msg+" (expired)"
	}
	s.log.Log(context.Background(), level, msg, "id", svid.ID.String(), "file", s.cfg.Cert,
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
}

// readSVID reads and parses the cert and key files; raw is both contents,
// to tell a real change from a touch.
func (s *FileSource) readSVID() (svid *x509svid.SVID, raw []byte, err error) {
	cert, err := os.ReadFile(s.cfg.Cert)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: SVID certificate: %w", err)
	}
	key, err := os.ReadFile(s.cfg.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: SVID key: %w", err)
	}
	norm, err := pkcs8PEM(key)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: SVID key %s: %w", s.cfg.Key, err)
	}
	svid, err = x509svid.Parse(cert, norm)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: SVID %s: %w", s.cfg.Cert, err)
	}
	return svid, slices.Concat(cert, key), nil
}

func readBundle(td spiffeid.TrustDomain, path string) (*x509bundle.Bundle, []byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: bundle of %q: %w", td.Name(), err)
	}
	b, err := x509bundle.Parse(td, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("mtls: bundle of %q in %s: %w", td.Name(), path, err)
	}
	if b.Empty() {
		return nil, nil, fmt.Errorf("mtls: bundle of %q in %s: no certificates", td.Name(), path)
	}
	return b, raw, nil
}
