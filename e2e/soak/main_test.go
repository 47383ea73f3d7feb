package soak

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/storegate/storegate/internal/testenv"
)

var (
	repoRoot   string
	gatewayBin string
)

// examplePlugins are the modules `make plugins` builds into bin/plugins.
var examplePlugins = []string{"limits", "schema", "encrypt", "registration"}

// TestMain builds the gateway and, when one is missing, the example
// plugins.
//
// The gateway is never built with the race detector, even when this test
// binary is (make test runs -race): the soak measures the gateway's heap,
// and the race detector's shadow memory and its per-goroutine state
// multiply both memory and CPU by 5-10x, which would make the heap figures
// mean little and the load melt the two shared cores. Races in the gateway
// are the business of the e2e package, which builds it with -race.
func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	root, err := testenv.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	repoRoot = root
	tmp, err := os.MkdirTemp("", "storegate-soak-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	gatewayBin = filepath.Join(tmp, "gateway")
	if err := testenv.BuildGateway(gatewayBin, false); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	for _, p := range examplePlugins {
		if _, err := os.Stat(filepath.Join(root, "bin", "plugins", p+".wasm")); err != nil {
			mk := exec.Command("make", "plugins")
			mk.Dir, mk.Stdout, mk.Stderr = root, os.Stderr, os.Stderr
			if err := mk.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "soak: building the example plugins with `make plugins`:", err)
				return 1
			}
			break
		}
	}
	return m.Run()
}
