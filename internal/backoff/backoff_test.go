package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelayDoublesAndCaps(t *testing.T) {
	for n, want := range []time.Duration{1, 2, 4, 8, 10, 10, 10} {
		if got := Delay(time.Second, 10*time.Second, n); got != want*time.Second {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want*time.Second)
		}
	}
	if got := Delay(time.Second, 30*time.Second, 1000); got != 30*time.Second {
		t.Errorf("no overflow: %v", got)
	}
	if got := Delay(time.Second, time.Minute, -1); got != time.Second {
		t.Errorf("negative n: %v", got)
	}
}

func TestNextResetAndJitter(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond}
	var got []time.Duration
	for i := 0; i < 4; i++ {
		got = append(got, b.Next())
	}
	if got[0] != 100*time.Millisecond || got[1] != 200*time.Millisecond || got[2] != 400*time.Millisecond || got[3] != 400*time.Millisecond {
		t.Fatalf("delays %v", got)
	}
	if b.Attempts() != 4 {
		t.Fatal(b.Attempts())
	}
	b.Reset()
	if b.Peek() != 100*time.Millisecond {
		t.Fatal("reset did not start over")
	}
	j := Backoff{Min: time.Second, Max: time.Second, Jitter: 0.2}
	for i := 0; i < 200; i++ {
		if d := j.Next(); d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("jittered delay %v outside ±20%%", d)
		}
	}
}

func TestWaitStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := Backoff{Min: time.Hour, Max: time.Hour}
	start := time.Now()
	if err := b.Wait(ctx); err != context.Canceled || time.Since(start) > time.Second {
		t.Fatalf("wait on a cancelled context: %v after %v", err, time.Since(start))
	}
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

func TestEqualJitterAndSpread(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 4 * time.Second, EqualJitter: true, Jitter: 0.9}
	for i := 0; i < 200; i++ {
		want := Delay(b.Min, b.Max, b.Attempts())
		if d := b.Next(); d < want/2 || d > want {
			t.Fatalf("attempt %d: equal-jittered delay %v outside [%v, %v]", i, d, want/2, want)
		}
	}
	n := b.Attempts()
	if d := b.Spread(250 * time.Millisecond); d < 125*time.Millisecond || d > 250*time.Millisecond || b.Attempts() != n {
		t.Fatalf("Spread(250ms) = %v, attempts %d -> %d", d, n, b.Attempts())
	}
	if d := (&Backoff{}).Spread(time.Second); d != time.Second {
		t.Fatalf("Spread without jitter changed the delay: %v", d)
	}
}
