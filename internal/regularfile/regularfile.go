// Package regularfile reads files that are reloaded at run time (policies,
// plugins) only when they are regular files.
package regularfile

import (
	"fmt"
	"os"
)

// Read reads path, refusing anything but a regular file (followed through
// symbolic links): a FIFO or device in a policy's or plugin's place would
// block the read, and with it every later reload, for good.
func Read(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	return os.ReadFile(path)
}
