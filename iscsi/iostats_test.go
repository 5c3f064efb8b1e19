package iscsi

import (
	"errors"
	"testing"
	"time"
)

// Reads, writes and syncs against the fake target are counted with their
// latency; the device is listed by Devices until it is closed.
func TestIOStatsAndDevices(t *testing.T) {
	ft := newFakeTarget(t)
	d := dialFake(t, ft.config())
	found := false
	for _, x := range Devices() {
		found = found || x == d
	}
	if !found {
		t.Fatal("a dialled device is not in Devices()")
	}
	before := d.IOStats()
	buf := make([]byte, 4096)
	for i := 0; i < 10; i++ {
		if _, err := d.WriteAt(buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
		if _, err := d.ReadAt(buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	after := d.IOStats()
	if got := after.Commands - before.Commands; got < 20 {
		t.Fatalf("%d commands counted, want at least 20 (10 writes, 10 reads)", got)
	}
	if after.Errors != before.Errors {
		t.Fatalf("errors %d -> %d without failures", before.Errors, after.Errors)
	}
	if after.LatencySum <= before.LatencySum || after.Buckets[len(after.Buckets)-1] != after.Commands {
		t.Fatalf("latency: sum %v, last bucket %d of %d commands", after.LatencySum, after.Buckets[len(after.Buckets)-1], after.Commands)
	}
	iqn, lun := d.Target()
	if iqn != ft.config().Target || lun != ft.config().LUN {
		t.Fatalf("target %s/%d", iqn, lun)
	}
	d.Close()
	for _, x := range Devices() {
		if x == d {
			t.Fatal("a closed device is still in Devices()")
		}
	}
}

// A command refused because the connection to the target is lost counts as an
// error (xmppd_iscsi_command_errors_total): a dead target moved only the loss
// counter before, the errors stayed 0 however many writes failed.
func TestIOStatsCountRefusedCommands(t *testing.T) {
	ft := newFakeTarget(t)
	d := dialFake(t, ft.config())
	if _, err := d.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	before := d.IOStats()
	lost := d.Changed()
	ft.close()
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the loss of the target was not noticed")
	}
	if _, err := d.WriteAt(make([]byte, 512), 0); err == nil {
		t.Fatal("a write succeeded without a target")
	}
	after := d.IOStats()
	if after.Errors <= before.Errors {
		t.Fatalf("errors %d -> %d after a write refused for a lost connection", before.Errors, after.Errors)
	}
	if after.Buckets[len(after.Buckets)-1] != after.Commands {
		t.Fatalf("latency buckets %d of %d commands", after.Buckets[len(after.Buckets)-1], after.Commands)
	}
	d.Close()
	errs := d.IOStats().Errors
	if _, err := d.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if d.IOStats().Errors != errs {
		t.Fatal("a write on a closed device counted as an I/O error")
	}
}
