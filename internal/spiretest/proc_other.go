//go:build !linux

package spiretest

import "os/exec"

// startTied starts cmd; Start refuses to run on other systems before this.
func startTied(cmd *exec.Cmd) error { return cmd.Start() }
