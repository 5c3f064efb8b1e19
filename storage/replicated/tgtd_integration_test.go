//go:build integration

package replicated

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"xedge/iscsi"
	"xedge/iscsi/tgt"
	"xedge/storage"
)

// tgtdLUN starts one tgtd with one 64 MiB LUN and logs in with the userspace
// initiator.
func tgtdLUN(t *testing.T, i int) (*tgt.Daemon, *iscsi.Device) {
	t.Helper()
	if err := tgt.Available(); err != nil {
		t.Fatalf("tgtd is a prerequisite of the integration tier: %v", err)
	}
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "tgtd.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d, err := tgt.Start(ctx, tgt.Options{Log: logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	img := filepath.Join(dir, "lun.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	iqn := fmt.Sprintf("iqn.2025-01.org.xedge.test:replicated-%d", i)
	if err := d.AddTarget(1, iqn, map[int]string{1: img}); err != nil {
		t.Fatal(err)
	}
	dev, err := iscsi.Dial(ctx, iscsi.Config{Portal: d.Portal, Target: iqn, LUN: 1, TaskTimeout: time.Second,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return d, dev
}

// The storage-loss rules again, against real iSCSI targets: each node's raft
// log lives on its own tgtd LUN. The leader's target is frozen (SIGSTOP): the
// initiator reports loss within its task timeout, the leader steps down and is
// demoted, writes continue; the target thaws, the initiator logs in again, the
// node re-persists and is promoted. Then every target is killed: degraded-ram,
// writes continue; targets restart: durable again.
func TestTgtdStorageLoss(t *testing.T) {
	var daemons []*tgt.Daemon
	c := newClusterWith(t, 3, func(i int) storage.BlockDevice {
		d, dev := tgtdLUN(t, i)
		daemons = append(daemons, d)
		return dev
	})
	c.waitVoters(3, 15*time.Second)
	mustDeclare(t, c.nodes[0].s, "roster", storage.Disc)
	w := startWriter(t, c, "roster")
	time.Sleep(200 * time.Millisecond)

	l := c.waitLeader()
	li := 0
	for i, nd := range c.nodes {
		if nd == l {
			li = i
		}
	}
	gen := l.s.Status().Generation
	frozen := time.Now()
	if err := daemons[li].Freeze(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "leader with a frozen target to step down and be demoted", 10*time.Second, func() bool {
		nl := c.leader()
		return nl != nil && nl != l && c.suffrage()[l.name] == "nonvoter"
	})
	t.Logf("target of leader %s frozen: stepped down and demoted after %v (initiator task timeout 1s)", l.name, time.Since(frozen).Round(time.Millisecond))
	if err := daemons[li].Thaw(); err != nil {
		t.Fatal(err)
	}
	thawed := time.Now()
	waitFor(t, "re-persist and promotion after the target thawed", 15*time.Second, func() bool {
		return c.voters() == 3 && l.s.Status().Mode == "durable"
	})
	t.Logf("target back: re-persisted and promoted after %v", time.Since(thawed).Round(time.Millisecond))
	if st := l.s.Status(); st.Generation <= gen {
		t.Fatalf("no new generation after re-persist: %+v", st)
	}

	for _, d := range daemons {
		d.Kill()
	}
	waitFor(t, "degraded-ram with every target dead", 15*time.Second, func() bool {
		for _, nd := range c.nodes {
			if nd.s.Status().Mode != "degraded-ram" {
				return false
			}
		}
		return true
	})
	mustApply(t, c.nodes[1].s, storage.Put("roster", "while-degraded", []byte("x")))
	for _, d := range daemons {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if err := d.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	waitFor(t, "durable again after the targets restarted", 20*time.Second, func() bool {
		for _, nd := range c.nodes {
			if nd.s.Status().Mode != "durable" {
				return false
			}
		}
		return c.voters() == 3
	})
	w.finish(t)
}
