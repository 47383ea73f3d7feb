package drain

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/storegate/storegate/internal/testenv"
)

// gatewayBin is the gateway built from this tree for these tests.
var gatewayBin string

// TestMain builds the gateway once (with the race detector when this test
// binary has it) and runs the tests.
func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "storegate-drain-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "drain:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	gatewayBin = filepath.Join(tmp, "gateway")
	if err := testenv.BuildGateway(gatewayBin, raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, "drain:", err)
		return 1
	}
	return m.Run()
}
