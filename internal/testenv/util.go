package testenv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/storegate/storegate/internal/loopback"
)

func nativeUint64(b []byte) uint64 { return binary.NativeEndian.Uint64(b) }

// Eventually calls cond until it returns nil, ctx ends or timeout passes,
// pacing retries by 20ms; the error says what cond last said. An error of
// cond made with Permanent ends the wait at once.
func Eventually(ctx context.Context, timeout time.Duration, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		last = cond(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		var stop permanent
		if errors.As(last, &stop) {
			return stop.err // no retry can change it
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not so after %v: %w", timeout, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Addr is a loopback address that was free a moment ago (internal/loopback).
func Addr() (string, error) { return loopback.Addr() }

// Port is a loopback port that was free a moment ago (internal/loopback).
func Port() (int, error) { return loopback.Port() }

// RepoRoot is the repository's root: the nearest parent of the working
// directory holding go.mod with a cmd/gateway.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "cmd", "gateway")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testenv: no repository root above the working directory")
		}
		dir = parent
	}
}
