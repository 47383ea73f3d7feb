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
//
// With a bundle, Reload fetches it now (with the ETag of the last one, so
// an unchanged bundle costs a 304) and swaps a new, verified one in; a bad
// one is refused in the same way.
func (e *Engine) Reload(ctx context.Context) error {
	if e.bundle != nil {
		return e.bundle.fetch(ctx)
	}
	e.reloading.Lock()
	defer e.reloading.Unlock()
	src, err := readSource(e.dir, false)
	if err != nil {
		e.refuse(err)
		return err
	}
	_, err = e.install(ctx, src, true)
	return err
}

// install compiles src and swaps it in, unless it is the policy in use
// (same content, same revision). A source that does not compile is
// refused: the last good version stays, and the error is logged and
// returned. notify says whether OnReload hears of it. Callers serialize
// installs.
func (e *Engine) install(ctx context.Context, src *source, notify bool) (changed bool, err error) {
	old := e.current.Load()
	if !old.inactive && src.digest() == old.digest && src.revision() == old.revision {
		e.succeeded(notify)
		return false, nil
	}
	v, err := prepare(ctx, src, e.opts)
	if err != nil {
		if notify {
			e.refuse(err)
		} else {
			e.failed(err)
		}
		return false, err
	}
	v.activated = time.Now()
	e.current.Store(v)
	e.succeeded(false) // OnReload hears of the new version below
	e.warn(v, src)
	k, o := e.origin()
	e.log.Info("policy reloaded", k, o, "revision", v.revision, "previous", old.revision, "files", v.files)
	if notify && e.onReload != nil {
		e.onReload(v.revision, nil)
	}
	return true, nil
}

// refuse logs, records and reports a reload that brought no good policy.
func (e *Engine) refuse(err error) {
	old := e.current.Load()
	k, o := e.origin()
	e.log.Error("policy reload failed, keeping the last good version", k, o, "revision", old.revision, "err", err)
	e.failed(err)
	if e.onReload != nil {
		e.onReload(old.revision, err)
	}
}

// Watch reloads the policy directory whenever a file in it changes, a short
// while after the last change of a burst, until ctx is done; it then returns
// nil. Reload failures are logged and keep the last good version; Watch
// returns an error only when the directory cannot be watched.
//
// With a bundle, Watch polls the bundle server instead: at once, then after
// a random delay between the configured minimum and maximum (sooner, with
// backoff, after a failed fetch).
func (e *Engine) Watch(ctx context.Context) error {
	if e.bundle != nil {
		return e.bundle.poll(ctx)
	}
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
