//go:build !race

package c2s

// raceEnabled: built with -race (race_on.go).
const raceEnabled = false
