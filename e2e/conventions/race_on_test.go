//go:build race

package conventions

// raceEnabled builds the gateway under test with the race detector too.
const raceEnabled = true
