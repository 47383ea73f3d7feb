//go:build unix

package policy

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time the process has used, every thread (the
// garbage collector's too) and both user and system time. On a shared
// machine it measures cost where wall-clock time measures contention.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
