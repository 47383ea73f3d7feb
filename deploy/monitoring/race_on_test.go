//go:build race

package monitoring

// raceEnabled builds the gateway under test with the race detector too.
const raceEnabled = true
