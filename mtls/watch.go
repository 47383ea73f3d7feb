package mtls

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce is how long a watcher waits after the first change before it
// reloads, so that a cert and key replaced one after the other are read
// together. It is counted from the first event, not the last, so a directory
// that never goes quiet still gets reloaded.
const debounce = 100 * time.Millisecond

// watcher calls reload after files change. It watches the files'
// directories, not the files: a file replaced by rename, or a symlink swapped
// under it, would otherwise drop out of the watch. Any change in those
// directories triggers a reload; the loader skips files whose content did
// not change.
type watcher struct {
	fs     *fsnotify.Watcher
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan chan struct{} // a reload asked for now (reload.go)
}

func watch(ctx context.Context, files []string, reload func(), log *slog.Logger) (*watcher, error) {
	fs, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("mtls: watching files: %w", err)
	}
	var dirs []string
	for _, f := range files {
		dir := filepath.Dir(f)
		if slices.Contains(dirs, dir) {
			continue
		}
		if err := fs.Add(dir); err != nil {
			fs.Close()
			return nil, fmt.Errorf("mtls: watching %s: %w", dir, err)
		}
		dirs = append(dirs, dir)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{fs: fs, cancel: cancel, done: make(chan struct{}), kick: make(chan chan struct{})}
	go w.loop(ctx, reload, log)
	return w, nil
}

func (w *watcher) loop(ctx context.Context, reload func(), log *slog.Logger) {
	defer close(w.done)
	defer w.fs.Close()
	timer := time.NewTimer(debounce)
	timer.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod || pending {
				continue
			}
			pending = true
			timer.Reset(debounce)
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			log.Warn("mtls: file watch error", "err", err.Error())
		case <-timer.C:
			pending = false
			reload()
		case done := <-w.kick:
			reload()
			close(done)
		}
	}
}

// stop ends the watch and waits for the loop to return.
func (w *watcher) stop() {
	w.cancel()
	<-w.done
}
