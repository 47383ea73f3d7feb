//go:build race

package bundle

// raceEnabled builds the gateway under test with the race detector too.
const raceEnabled = true
