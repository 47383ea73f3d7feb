// Package loopback hands out loopback TCP ports for tests and benchmarks
// that start servers which insist on binding an address themselves (an
// embedded etcd, a Consul agent, a SPIRE server).
//
// The usual trick — listen on port 0, read the port, close — picks from the
// kernel's ephemeral range, the same range every outgoing connection of
// every process on the machine draws from, so between the close and the
// server's own bind another test's dial can take the port ("bind: address
// already in use"). Ports here come from below the ephemeral range, where
// no connect() lands, and each process walks its own stretch of it, so
// test binaries running side by side do not hand out the same port.
package loopback

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
)

const (
	low  = 15000 // below any ephemeral range Linux ships (32768 by default)
	high = 32000
	span = high - low
)

var (
	mu   sync.Mutex
	next = low + (os.Getpid()*7919)%span // a stretch of its own per process
	lent = map[int]bool{}
)

// Port returns a port on 127.0.0.1 that was free a moment ago, was not
// handed out before by this process, and lies outside the ephemeral range.
func Port() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for range span {
		p := next
		next++
		if next >= high {
			next = low
		}
		if lent[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		lent[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("loopback: no free port in %d-%d", low, high)
}

// Addr is Port as "127.0.0.1:port".
func Addr() (string, error) {
	p, err := Port()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}
