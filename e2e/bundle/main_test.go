package bundle

import (
	"os"
	"testing"

	"github.com/storegate/storegate/internal/testenv"
)

// gatewayBin is the gateway built from this tree for the package's tests.
var gatewayBin string

// TestMain builds the gateway once (with the race detector when this test
// binary has it) and runs the tests.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m, raceEnabled, &gatewayBin)) }
