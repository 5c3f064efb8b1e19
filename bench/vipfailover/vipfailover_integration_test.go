//go:build integration && linux

package vipfailover

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestVIPFailover kills the VIP holder three times (link down, then SIGKILL) and
// checks that a client connected through the VIP with resumable XEP-0198 stream
// management is served again — reconnected and its session resumed — within 2 s
// each time, while a client on a surviving node sends it messages, none of which
// its server acknowledged is lost; an idle client logging in afresh through the
// VIP is served within 2 s too, with the client namespace's neighbour entry
// naming a survivor (the benchmark, `go run ./bench/cmd/vipfailover -resume`,
// does 20 kills). The first kill is the raft leader's (n1 bootstraps the store).
func TestVIPFailover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs integration tests as root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Kills: 3, Resume: true, Dir: t.TempDir(), Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range res.Kills {
		if k.Resumed > 2 {
			t.Errorf("kill %d (%s): session resumed after %.3f s (target 2 s)", i+1, k.Killed, k.Resumed)
		}
		if k.Served > 2 {
			t.Errorf("kill %d (%s): fresh login served after %.3f s (target 2 s)", i+1, k.Killed, k.Served)
		}
		if k.MsgLost != 0 || k.MsgAcked == 0 {
			t.Errorf("kill %d (%s): %d of %d acknowledged messages lost", i+1, k.Killed, k.MsgLost, k.MsgAcked)
		}
	}
	t.Logf("resumed: p50 %.3f s, max %.3f s; served again: p50 %.3f s, max %.3f s", res.ResumedP50, res.ResumedMax, res.ServedP50, res.ServedMax)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
