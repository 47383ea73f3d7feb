//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package consul

import (
	"errors"
	"net"
	"syscall"
)

// unusable reports whether an idle connection can no longer carry a
// request: the agent closed it (or reset it, or sent something unasked).
// One non-blocking peek, instead of the reader goroutine per connection
// with which http.Transport notices the same.
func unusable(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	bad := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		bad = n > 0 || (err == nil && n == 0) || (err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR))
		return true
	})
	return bad || err != nil
}
