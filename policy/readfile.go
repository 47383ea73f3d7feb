package policy

import (
	"fmt"
	"os"
)

// readRegular reads a policy file, refusing anything but a regular file
// (followed through symbolic links): a FIFO or device named like a policy
// would block the read, and with it every later reload, for good.
func readRegular(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	return os.ReadFile(path)
}
