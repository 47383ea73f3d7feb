package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// findTool returns the dev tool name to run: the flag's value (made
// absolute when it is a path), else bin/<name>, else name on $PATH; ""
// when there is none.
func findTool(name, flag string) string {
	if flag != "" {
		if strings.ContainsRune(flag, os.PathSeparator) {
			if p, err := filepath.Abs(flag); err == nil {
				return p
			}
		}
		return flag
	}
	if p, err := filepath.Abs(filepath.Join("bin", name)); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}
