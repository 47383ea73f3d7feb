//go:build !unix

package policy

import "time"

// cpuTime is not measured here.
func cpuTime() time.Duration { return 0 }
