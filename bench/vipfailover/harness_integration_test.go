//go:build integration && linux

package vipfailover

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// startHarness is the preamble of every harness test: it needs root (network
// namespaces), builds xmppd and xmppctl, starts the namespaces and the three
// nodes (and tgtd when opt.ISCSI asks; a missing tgtd fails the test, setup
// installs it), logs into t, tears everything down in t.Cleanup and copies the
// node logs into the output when the test failed. opt.Dir defaults to a
// t.TempDir; opt.Log is the test's log.
func startHarness(t *testing.T, opt Options) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs integration tests as root)")
	}
	if opt.Dir == "" {
		opt.Dir = t.TempDir()
	}
	opt.Log = testWriter{t}
	start := time.Now()
	h, err := newHarness(opt)
	if err != nil {
		logTails(t, opt.Dir)
		t.Fatal(err)
	}
	t.Logf("harness up (binaries built, namespaces and nodes started) after %.1f s", time.Since(start).Seconds())
	t.Cleanup(func() {
		t0 := time.Now()
		h.teardown()
		t.Logf("teardown %.1f s", time.Since(t0).Seconds())
	})
	keepLogs(t, h)
	return h
}

// keepLogs copies the logs (nodes, tgtd) into the test output when the test
// failed (the work directory is a t.TempDir, removed after the test).
func keepLogs(t *testing.T, h *harness) {
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, h.opt.Dir)
		}
	})
}

// logTails logs the last 200 kB of every *.log in dir.
func logTails(t *testing.T, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if len(b) > 200_000 {
			b = b[len(b)-200_000:]
		}
		t.Logf("--- %s (tail) ---\n%s", filepath.Base(f), b)
	}
}
