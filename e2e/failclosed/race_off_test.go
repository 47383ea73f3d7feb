//go:build !race

package failclosed

const raceEnabled = false
