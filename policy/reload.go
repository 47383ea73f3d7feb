package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce is how long Watch waits for a burst of file events (an editor
// saving, a checkout) to settle before it reloads.
const debounce = 100 * time.Millisecond

// Reload reads and recompiles the policy directory and swaps the new
// version in. When the files have not changed it does nothing. When they do
// not load, the last good version stays in place and the error (naming file
// and line) is logged and returned. A directory that became empty is
// loaded: every op is then denied, with a warning.
func (e *Engine) Reload(ctx context.Context) error {
	e.reloading.Lock()
	defer e.reloading.Unlock()
	old := e.current.Load()
	src, err := readSource(e.dir, false)
	if err == nil && src.revision() == old.revision {
		return nil
	}
	v, src, err := load(ctx, e.dir, e.opts)
	if err != nil {
		e.log.Error("policy reload failed, keeping the last good version",
			"dir", e.dir, "revision", old.revision, "err", err)
		if e.onReload != nil {
			e.onReload(old.revision, err)
		}
		return err
	}
	e.current.Store(v)
	e.warn(v, src)
	e.log.Info("policy reloaded", "dir", e.dir, "revision", v.revision, "previous", old.revision, "files", v.files)
	if e.onReload != nil {
		e.onReload(v.revision, nil)
	}
	return nil
}

// Watch reloads the policy directory whenever a file in it changes, a short
// while after the last change of a burst, until ctx is done; it then returns
// nil. Reload failures are logged and keep the last good version; Watch
// returns an error only when the directory cannot be watched.
func (e *Engine) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("policy: watch %s: %w", e.dir, err)
	}
	defer w.Close()
	if err := w.Add(e.dir); err != nil {
		return fmt.Errorf("policy: watch %s: %w", e.dir, err)
	}
	// Catch what changed between Load and now; errors are logged.
	_ = e.Reload(ctx)

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
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			e.log.Warn("policy watch error", "dir", e.dir, "err", err)
		case <-timer.C:
			_ = e.Reload(ctx) // logs its errors
		}
	}
}
