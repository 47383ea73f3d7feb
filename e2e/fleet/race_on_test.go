//go:build race

package fleet

// raceEnabled builds the gateway under test with the race detector too.
const raceEnabled = true
