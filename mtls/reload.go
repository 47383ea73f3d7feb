package mtls

import (
	"context"
	"errors"
)

// Reload re-reads the files now, as a change to them would, and returns
// once that is done: for mounts where no file event arrives (SIGHUP). It
// runs in the watch loop, so it never overlaps a reload the loop started.
// Broken files keep the last good SVID or bundle, as always.
func (s *FileSource) Reload(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case s.w.kick <- done:
	case <-s.w.done:
		return errors.New("mtls: file source closed: nothing reloads it")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
