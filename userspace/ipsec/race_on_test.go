//go:build race

package ipsec

// raceEnabled: the race detector allocates per synchronisation and
// sync.Pool drops items at random, so allocation counts mean nothing.
const raceEnabled = true
