//go:build integration && linux

package vipfailover

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestVIPFailover kills the VIP holder three times (link down, then SIGKILL) and
// checks that an idle client logged in through the VIP is served again through it
// within 2 s each time, with the client namespace's neighbour entry naming a
// survivor (the benchmark, `go run ./bench/cmd/vipfailover`, does 20 kills).
func TestVIPFailover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs integration tests as root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Kills: 3, Dir: t.TempDir(), Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range res.Kills {
		if k.Served > 2 {
			t.Errorf("kill %d: served again after %.3f s (target 2 s)", i+1, k.Served)
		}
	}
	t.Logf("served again: p50 %.3f s, max %.3f s", res.ServedP50, res.ServedMax)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
