package resume

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/storegate/storegate/internal/testenv"
)

// gatewayBin is the gateway under test, built from this tree once.
var gatewayBin string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "storegate-resume-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	gatewayBin = filepath.Join(dir, "gateway")
	if err := testenv.BuildGateway(gatewayBin, raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, "resume:", err)
		return 1
	}
	return m.Run()
}
