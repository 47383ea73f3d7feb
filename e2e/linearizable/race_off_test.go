//go:build !race

package linearizable

const raceEnabled = false
