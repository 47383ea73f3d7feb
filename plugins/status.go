package plugins

import (
	"context"
	"encoding/hex"
	"errors"
)

// Loaded is a plugin as it runs now: its file and the sha256 of the
// module in use (the last good one, when a newer file failed to load).
type Loaded struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// Loaded lists the plugins in spec order with the digests of the modules
// in use.
func (h *Host) Loaded() []Loaded {
	out := make([]Loaded, 0, len(h.plugins))
	for _, pl := range h.plugins {
		l := Loaded{Name: pl.spec.Name, Path: pl.spec.Path}
		if v := pl.current.Load(); v != nil {
			l.SHA256 = hex.EncodeToString(v.hash[:])
		}
		out = append(out, l)
	}
	return out
}

// Reload re-reads every plugin's file now, as Watch does on a file event
// (for mounts where none arrives: SIGHUP): a changed module is swapped in,
// one that fails to load keeps the current version. It returns the
// failures, joined.
func (h *Host) Reload(ctx context.Context) error {
	var errs []error
	for _, pl := range h.plugins {
		if err := h.reload(ctx, pl); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
