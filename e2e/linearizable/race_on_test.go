//go:build race

package linearizable

// raceEnabled builds the gateway under test with the race detector too.
const raceEnabled = true
