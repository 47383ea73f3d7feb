package policy

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/open-policy-agent/opa/v1/bundle"
)

// persistFile is the persisted bundle's name in its directory.
const persistFile = "bundle.tar.gz"

// maxBundleFiles bounds the entries of a bundle's tarball: each costs the
// reader memory whatever its size.
const maxBundleFiles = 10000

// persist writes raw to path so that a crash at any point leaves either the
// old file or the new one whole: a temporary file in the same directory,
// synced, renamed over path, and the directory synced.
func persist(path string, raw []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("policy: persist bundle: %w", err)
	}
	f, err := os.CreateTemp(dir, ".bundle-*.tmp")
	if err != nil {
		return fmt.Errorf("policy: persist bundle: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename: nothing left to remove
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return fmt.Errorf("policy: persist bundle: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("policy: persist bundle: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("policy: persist bundle: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("policy: persist bundle: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("policy: persist bundle: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("policy: persist bundle: %w", err)
	}
	return nil
}

// boot installs the persisted bundle, verified again, if there is one. A
// persisted bundle that no longer verifies (another key configured, the
// file damaged) is refused like a downloaded one: the engine then waits
// for the server.
func (b *bundleClient) boot(ctx context.Context) {
	if b.persistPath == "" {
		return
	}
	raw, err := readPersisted(b.persistPath, b.cfg.SizeLimit)
	if errors.Is(err, fs.ErrNotExist) {
		b.e.log.Info("no persisted policy bundle: every request is denied until the bundle server answers",
			"file", b.persistPath)
		return
	}
	if err == nil {
		var bb *bundle.Bundle
		if bb, err = b.readBundle(raw, b.persistPath); err == nil {
			err = b.install(ctx, bb, nil, false)
		}
	}
	if err != nil {
		err = fmt.Errorf("policy: persisted bundle %s refused: %w", b.persistPath, err)
		b.e.failed(err)
		b.e.log.Error("persisted policy bundle refused: every request is denied until the bundle server answers",
			"file", b.persistPath, "err", err)
		return
	}
	b.e.log.Info("policy loaded from the persisted bundle", "file", b.persistPath, "revision", b.e.Revision())
}

// readPersisted reads a regular file of at most limit bytes.
func readPersisted(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, over the bundle size limit of %d", path, st.Size(), limit)
	}
	return io.ReadAll(io.LimitReader(f, limit+1))
}

// checkTarball bounds what a gzipped tarball expands to: its files'
// contents together at most limit bytes, at most maxBundleFiles entries.
// OPA's reader bounds each file, not their sum.
func checkTarball(r io.Reader, limit int64) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("policy: bundle: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("policy: bundle: %w", err)
		}
		if n >= maxBundleFiles {
			return fmt.Errorf("policy: bundle holds more than %d files", maxBundleFiles)
		}
		if total += h.Size; h.Size < 0 || total > limit {
			return fmt.Errorf("policy: bundle content exceeds the size limit of %d bytes", limit)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return fmt.Errorf("policy: bundle: %w", err)
		}
	}
}
