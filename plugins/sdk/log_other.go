//go:build !wasip1

package sdk

import "os"

// levelNames prefixes host-side log lines.
var levelNames = [...]string{"debug", "info", "warn", "error"}

// writeLog writes msg to standard error, so that plugin code logs the same
// way under go test on the host.
func writeLog(level Level, msg string) {
	name := "level?"
	if level >= 0 && int(level) < len(levelNames) {
		name = levelNames[level]
	}
	os.Stderr.WriteString("plugin " + name + ": " + msg + "\n")
}
