package soak

import (
	"os"
	"testing"

	"github.com/storegate/storegate/internal/testenv"
)

// gatewayBin is the gateway under test; pluginDir holds the example plugins.
var gatewayBin, pluginDir string

// TestMain builds the gateway and, when one is missing, the example
// plugins.
//
// The gateway is never built with the race detector, even when this test
// binary is (make test runs -race): the soak measures the gateway's heap,
// and the race detector's shadow memory and its per-goroutine state
// multiply both memory and CPU by 5-10x, which would make the heap figures
// mean little and the load melt the two shared cores. Races in the gateway
// are the business of the e2e package, which builds it with -race.
func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithPlugins(m, false, &gatewayBin, &pluginDir))
}
