package linearizable

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/storegate/storegate/internal/testenv"
)

// gatewayBin is the gateway built from this tree for the package's tests.
var gatewayBin string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "storegate-linearizable")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	gatewayBin = filepath.Join(tmp, "gateway")
	if err := testenv.BuildGateway(gatewayBin, raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
