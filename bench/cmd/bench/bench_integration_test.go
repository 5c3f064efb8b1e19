//go:build integration

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"xedge/bench/report"
)

// TestTinyBenchAllServers runs the harness end to end with tiny sizes against
// ejabberd, Prosody (Debian's packages) and xmppd (built here), with every
// workload including tsung, group chat and MAM, and checks that every figure came out for every
// server and that no server process survives the run.
func TestTinyBenchAllServers(t *testing.T) {
	for _, bin := range []string{"/usr/sbin/ejabberdctl", "/usr/bin/prosody", "/usr/bin/tsung", "/usr/bin/taskset"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s missing (build/setup.sh bench installs it): %v", bin, err)
		}
	}
	dir := t.TempDir()
	xmppd := filepath.Join(dir, "xmppd")
	build := exec.Command("go", "build", "-o", xmppd, "xedge/xmppd/cmd/xmppd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build xmppd: %v\n%s", err, out)
	}
	// plot.py is found relative to the repository root.
	wd, _ := os.Getwd()
	if err := os.Chdir(filepath.Join(wd, "..", "..", "..")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chdir(wd) })
	out := filepath.Join(dir, "results")
	err := run([]string{"--quick", "--servers", "xmppd,ejabberd,prosody", "--xmppd", xmppd,
		"--sessions", "60", "--pairs", "4", "--fanout-users", "30", "--contacts", "6",
		"--login-duration", "2s", "--chat-duration", "2s", "--settle", "1s",
		"--tsung-users", "20", "--tsung-duration", "3s", "--login-workers", "5",
		"--muc-occupants", "12", "--muc-senders", "3", "--muc-duration", "1s", "--mam-archive", "200", "--mam-peers", "3", "--mam-queries", "5",
		// A developer's benchmark run may hold the machine-wide run lock: wait
		// at most 2 minutes for it, then fail with its holder's PID and command
		// line (the timeout bounds the run itself, after the lock is taken).
		"--lock-wait", "2m", "--timeout", "6m", "--out", out})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(lastJSON)
	if err != nil {
		t.Fatal(err)
	}
	var r report.Run
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Servers) != 3 {
		t.Fatalf("%d servers in results", len(r.Servers))
	}
	for _, s := range r.Servers {
		for _, f := range report.Figures {
			if _, ok := s.Figures[f.Key]; !ok {
				t.Errorf("%s: no %s (errors: %v)", s.Name, f.Key, s.Errors)
			}
		}
	}
	if len(r.Ratios["xmppd/ejabberd"]) == 0 || len(r.Targets) == 0 {
		t.Error("no ratios or targets computed")
	}
	if _, err := os.Stat(lastJSON[:len(lastJSON)-len(".json")] + ".png"); err != nil {
		t.Errorf("no chart: %v", err)
	}
	// Nothing we started may survive: no process with our temp dirs on its command line.
	if out, _ := exec.Command("pgrep", "-f", "xbench-").Output(); len(out) > 0 {
		t.Errorf("benchmark processes left running: %s", out)
	}
}
