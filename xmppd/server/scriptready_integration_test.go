//go:build integration

package server_test

import (
	"os"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// waitScriptReady waits (at most within) until a slixmpp script running in the
// background has created its ready file, failing the test if the script ends
// first (with its output) or the time runs out (saying what was awaited).
func waitScriptReady(t *testing.T, ready string, done <-chan testenv.PythonResult, within time.Duration, what string) {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			return
		}
		select {
		case r := <-done:
			t.Fatalf("script ended early: %v\n%s", r.Err, r.Output)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s", what, within)
		}
	}
}
