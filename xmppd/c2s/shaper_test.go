package c2s

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBucket(10000)
	b.now = func() time.Time { return now }
	b.last = now
	if d := b.take(10000); d != 0 {
		t.Fatalf("burst should pass: %v", d)
	}
	if d := b.take(5000); d != 500*time.Millisecond {
		t.Fatalf("over rate: %v", d)
	}
	now = now.Add(time.Second)
	if d := b.take(1000); d != 0 {
		t.Fatalf("refilled: %v", d)
	}
}

func TestThrottle(t *testing.T) {
	now := time.Unix(0, 0)
	th := newThrottle(3, time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil)))
	th.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if th.Blocked("1.2.3.4") {
			t.Fatal("blocked early")
		}
		th.Fail("1.2.3.4")
	}
	if !th.Blocked("1.2.3.4") || th.Blocked("5.6.7.8") {
		t.Fatal("block")
	}
	now = now.Add(2 * time.Minute)
	if th.Blocked("1.2.3.4") {
		t.Fatal("should expire")
	}
	th.Fail("5.6.7.8")
	th.Success("5.6.7.8")
	if len(th.ips) != 0 {
		t.Fatal("success should forget")
	}
}
