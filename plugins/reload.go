package plugins

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/storegate/storegate/internal/regularfile"
)

// debounce is how long Watch waits for a burst of file events (a copy, an
// editor saving, a checkout) to settle before it reloads.
const debounce = 100 * time.Millisecond

// Watch reloads a plugin whenever its .wasm file changes (written in
// place, or replaced by an atomic rename), a short while after the last
// event of a burst, until ctx is done; it then returns nil. It watches the
// files' directories, not the files: a rename replaces the file a watch
// on it would follow. A new version that fails to load is logged, counted
// and the old one kept. Watch returns an error only when a directory
// cannot be watched.
func (h *Host) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("plugins: watch: %w", err)
	}
	defer w.Close()
	dirs := map[string][]*plugin{}
	for _, pl := range h.plugins {
		dir := filepath.Dir(pl.spec.Path)
		if len(dirs[dir]) == 0 {
			if err := w.Add(dir); err != nil {
				return fmt.Errorf("plugins: watch %s: %w", dir, err)
			}
		}
		dirs[dir] = append(dirs[dir], pl)
	}
	// Catch what changed between New and the watch; errors are logged.
	for _, pl := range h.plugins {
		_ = h.reload(ctx, pl)
	}

	dirty := map[string]bool{}
	timer := time.NewTimer(debounce)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op != fsnotify.Chmod {
				dirty[filepath.Dir(ev.Name)] = true
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			h.log.Warn("plugin watch error", "err", err)
		case <-timer.C:
			// Any event in a directory (a Kubernetes volume swaps a
			// symlink, not the file) rechecks its plugins; reload skips
			// files whose content did not change.
			for dir := range dirty {
				for _, pl := range dirs[dir] {
					_ = h.reload(ctx, pl) // logs its errors
				}
			}
			clear(dirty)
		}
	}
}

// reload loads pl's file again if its content changed, and swaps the new
// version in: new calls go to the new pool at once, calls in flight finish
// on the old one, which is closed when they are done. A file that fails
// to load keeps the old version; the failure is logged, counted and
// reported to OnReload, once per distinct content.
func (h *Host) reload(ctx context.Context, pl *plugin) error {
	pl.reloading.Lock()
	defer pl.reloading.Unlock()
	old := pl.current.Load()
	if old == nil {
		return errHostClosed
	}
	wasm, err := regularfile.Read(pl.spec.Path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil // between a remove and a rename: the next event reloads
		}
		pl.log.Error("plugin reload failed, keeping the current version", "path", pl.spec.Path, "err", err)
		return err
	}
	hash := sha256.Sum256(wasm)
	if hash == old.hash || hash == pl.failedHash {
		return nil
	}
	v, err := pl.loadVersion(ctx, wasm, hash)
	if err != nil {
		pl.failedHash = hash
		h.countLoadFailure(ctx, pl.spec.Name, err)
		err = loadError(pl.spec.Name, pl.spec.Path, err)
		pl.log.Error("plugin reload failed, keeping the current version", "path", pl.spec.Path, "err", err)
		h.reloaded(pl.spec.Name, err)
		return err
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		v.discard()
		return errHostClosed
	}
	pl.current.Store(v)
	h.rebuildChain()
	h.retire(old)
	h.mu.Unlock()
	pl.failedHash = [32]byte{}
	pl.log.Info("plugin reloaded", "path", pl.spec.Path, "capabilities", v.caps.String(), "instances", v.size)
	h.reloaded(pl.spec.Name, nil)
	return nil
}

// reloaded tells OnReload, if set.
func (h *Host) reloaded(plugin string, err error) {
	if h.onReload != nil {
		h.onReload(plugin, err)
	}
}
