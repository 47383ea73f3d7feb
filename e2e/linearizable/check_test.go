package linearizable

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// checkTimeout bounds porcupine's search; Unknown (timed out) is a failure.
const checkTimeout = 60 * time.Second

// verdict is porcupine's answer on one history.
type verdict struct {
	Result   porcupine.CheckResult
	Ops      int
	Unknown  int // operations with an unknown outcome
	Took     time.Duration
	RevError error // the revision ↔ value mapping is not a bijection
	model    porcupine.Model
	info     porcupine.LinearizationInfo
}

// check runs porcupine over ops.
func check(ops []porcupine.Operation) verdict {
	v := verdict{Ops: len(ops)}
	for _, op := range ops {
		if op.Output.(output).Unknown {
			v.Unknown++
		}
	}
	revs, err := revisions(ops)
	if err != nil {
		v.RevError, v.Result = err, porcupine.Illegal
		return v
	}
	v.model = kvModel(revs)
	start := time.Now()
	v.Result, v.info = porcupine.CheckOperationsVerbose(v.model, ops, checkTimeout)
	v.Took = time.Since(start)
	return v
}

// visualize writes porcupine's HTML visualization of v to the test's
// output directory (-artifacts; otherwise a directory left in the system's
// temporary directory) and logs its path.
func visualize(t *testing.T, name string, v verdict) {
	t.Helper()
	if v.RevError != nil {
		return
	}
	dir := ""
	if artifacts() {
		dir = t.ArtifactDir()
	} else {
		d, err := os.MkdirTemp("", "storegate-linearizable-")
		if err != nil {
			t.Logf("visualization: %v", err)
			return
		}
		dir = d
	}
	path := filepath.Join(dir, name+".html")
	if err := porcupine.VisualizePath(v.model, v.info, path); err != nil {
		t.Logf("visualization: %v", err)
		return
	}
	t.Logf("porcupine visualization of %s: %s", name, path)
}

// artifacts reports whether go test was given -artifacts.
func artifacts() bool {
	f := flag.Lookup("test.artifacts")
	return f != nil && f.Value.String() == "true"
}

func (v verdict) String() string {
	s := fmt.Sprintf("%d operations checked (%d with unknown outcome) in %v: ", v.Ops, v.Unknown, v.Took.Round(time.Millisecond))
	switch {
	case v.RevError != nil:
		return s + "not linearizable: " + v.RevError.Error()
	case v.Result == porcupine.Ok:
		return s + "linearizable"
	case v.Result == porcupine.Illegal:
		return s + "NOT linearizable"
	}
	return s + "unknown (the checker timed out)"
}
