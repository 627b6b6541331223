//go:build race

package e2e

// raceEnabled: under "go test -race" the sidegate binary is built with the
// race detector too, so the end-to-end runs also hunt data races in it.
const raceEnabled = true
