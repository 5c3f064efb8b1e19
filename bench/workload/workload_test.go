package workload

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestRingContactsMutual(t *testing.T) {
	const n, k = 50, 20
	for i := range n {
		cs := ringContacts(i, n, k)
		if len(cs) != k {
			t.Fatalf("user %d has %d contacts", i, len(cs))
		}
		seen := map[int]bool{}
		for _, c := range cs {
			if c == i || seen[c] {
				t.Fatalf("user %d: bad contact list %v", i, cs)
			}
			seen[c] = true
			if !slices.Contains(ringContacts(c, n, k), i) {
				t.Fatalf("contact %d of %d is not mutual", c, i)
			}
		}
	}
}

func TestParallelRunsAllAndStopsOnError(t *testing.T) {
	var ran atomic.Int64
	if err := Parallel(context.Background(), 100, 7, func(context.Context, int) error { ran.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	if ran.Load() != 100 {
		t.Fatalf("ran %d of 100", ran.Load())
	}
	boom := errors.New("boom")
	ran.Store(0)
	err := Parallel(context.Background(), 1000, 4, func(_ context.Context, i int) error {
		ran.Add(1)
		if i == 10 {
			return boom
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if !errors.Is(err, boom) || ran.Load() >= 1000 {
		t.Fatalf("err %v after %d calls", err, ran.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Parallel(ctx, 10, 2, func(context.Context, int) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

func TestUserPasswordScheme(t *testing.T) {
	u, p := User("u", 17)
	if u != "u17" || p != "pw17" {
		t.Fatalf("User = %q %q (tsung expects password = passwd + id)", u, p)
	}
}
