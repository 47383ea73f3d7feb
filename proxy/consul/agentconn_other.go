//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package consul

import "net"

// unusable cannot tell here: a request on a connection the agent closed is
// sent again when that is safe (agentTransport), or fails.
func unusable(net.Conn) bool { return false }
