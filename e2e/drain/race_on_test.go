//go:build race

package drain

// raceEnabled builds the gateway under test with the race detector too.
const raceEnabled = true
