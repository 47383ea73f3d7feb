//go:build race

package resume

// raceEnabled builds the gateway under test with the race detector too.
const raceEnabled = true
