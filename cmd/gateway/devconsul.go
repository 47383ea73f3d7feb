package main

import (
	"os"
	"os/exec"
	"path/filepath"
)

// findConsul returns the consul binary to run: the flag's value, else
// bin/consul, else consul on $PATH; "" when there is none.
func findConsul(flag string) string {
	if flag != "" {
		return flag
	}
	if p, err := filepath.Abs(filepath.Join("bin", "consul")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p
	}
	return ""
}
