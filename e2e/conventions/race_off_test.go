//go:build !race

package conventions

const raceEnabled = false
