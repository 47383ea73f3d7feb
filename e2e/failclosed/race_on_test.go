//go:build race

package failclosed

// raceEnabled builds the gateway under test with the race detector too.
const raceEnabled = true
