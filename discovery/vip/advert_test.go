package vip

import (
	"net"
	"testing"
	"time"
)

// The master down timer: a node heard at a 200 ms interval is silent once
// Mult intervals pass without an advert, not before; a node never heard is
// never silent (no adverts on the segment: the cluster's failure detection
// alone decides); a node that was itself stalled finds nobody silent until it
// had time to read what arrived; whoever announces a VIP from a known MAC is
// alive again.
func TestAdvertsMasterDownTimer(t *testing.T) {
	a := NewAdverts(4)
	t0 := time.Now()
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	iv := 200 * time.Millisecond
	if _, s := a.Silent("n1", t0.Add(time.Hour)); s {
		t.Fatal("a node never heard is silent")
	}
	for i := range 5 {
		a.Heard("n1", iv, uint32(i+1), mac, t0.Add(time.Duration(i)*iv))
	}
	last := t0.Add(4 * iv)
	if next := a.NextDeadline(last); !next.Equal(last.Add(4 * iv)) {
		t.Fatalf("next deadline %v after the last advert, want 800ms", next.Sub(last))
	}
	if _, s := a.Silent("n1", last.Add(4*iv)); s {
		t.Fatal("silent at exactly the dead interval")
	}
	ago, s := a.Silent("n1", last.Add(4*iv+time.Millisecond))
	if !s || ago != 4*iv+time.Millisecond {
		t.Fatalf("past the dead interval: silent %v for %v", s, ago)
	}
	if next := a.NextDeadline(last.Add(time.Second)); !next.IsZero() {
		t.Fatalf("a silent node still has a deadline: %v", next)
	}
	// This node stalled: nobody is silent before it could read.
	a.Stalled(last.Add(time.Second), 400*time.Millisecond)
	if _, s := a.Silent("n1", last.Add(time.Second+300*time.Millisecond)); s {
		t.Fatal("silent while this node's own stall is held off")
	}
	if _, s := a.Silent("n1", last.Add(time.Second+400*time.Millisecond)); !s {
		t.Fatal("not silent once the hold-off is over")
	}
	// The silent node announces a VIP (a false takeover answered).
	if n := a.HeardFrom(mac, last.Add(2*time.Second)); n != "n1" {
		t.Fatalf("HeardFrom its MAC: %q", n)
	}
	if _, s := a.Silent("n1", last.Add(2*time.Second+iv)); s {
		t.Fatal("silent right after it announced")
	}
	if n := a.HeardFrom(net.HardwareAddr{2, 0, 0, 0, 0, 9}, last); n != "" {
		t.Fatalf("an unknown MAC named %q", n)
	}
	// Counters: one silence, the gaps and the sequence numbers skipped.
	a.Heard("n1", iv, 9, mac, last.Add(3*time.Second))
	st := a.Status(last.Add(3 * time.Second))
	if len(st) != 1 || st[0].Silences != 1 || st[0].Missed != 3 || st[0].Count != 6 || st[0].Dead != 4*iv || st[0].Silent {
		t.Fatalf("status %+v", st)
	}
	if st[0].MaxGap != time.Second {
		t.Fatalf("max gap %v, want 1s (HeardFrom at +2s, advert at +3s)", st[0].MaxGap)
	}
	a.Forget("n1")
	if _, s := a.Silent("n1", last.Add(time.Hour)); s {
		t.Fatal("a forgotten node is silent")
	}
	if NewAdverts(0).Mult != 4 {
		t.Fatal("default multiplier")
	}
}

// The dead interval follows each sender's own advert interval.
func TestAdvertsDeadIntervalPerSender(t *testing.T) {
	a := NewAdverts(3)
	t0 := time.Now()
	a.Heard("fast", 100*time.Millisecond, 1, nil, t0)
	a.Heard("slow", time.Second, 1, nil, t0)
	if _, s := a.Silent("fast", t0.Add(301*time.Millisecond)); !s {
		t.Fatal("fast sender not silent after 3 × 100 ms")
	}
	if _, s := a.Silent("slow", t0.Add(2*time.Second)); s {
		t.Fatal("slow sender silent before 3 × 1 s")
	}
	if next := a.NextDeadline(t0.Add(301 * time.Millisecond)); !next.Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("next deadline %v", next.Sub(t0))
	}
}
