package rounds

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Calls made while a run is in flight share the next run, which starts after
// all of them: each sees a run that began after it was called.
func TestCallsShareTheNextRound(t *testing.T) {
	var started atomic.Int64 // runs so far; a run returns its number
	gate := make(chan struct{})
	g := New(func() (int64, error) {
		n := started.Add(1)
		if n == 1 {
			<-gate // the first run is held until the others are waiting
		}
		return n, nil
	})
	first := make(chan int64)
	go func() {
		v, _ := g.Do(context.Background())
		first <- v
	}()
	for started.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	got := make(chan int64, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := g.Do(context.Background())
			if err != nil {
				t.Error(err)
			}
			got <- v
		}()
	}
	for g.waiting() < 50 {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	close(got)
	if v := <-first; v != 1 {
		t.Fatalf("first call got run %d, want 1", v)
	}
	for v := range got {
		if v < 2 {
			t.Fatalf("a call made during run 1 got run %d", v)
		}
	}
	if n := g.Runs(); n != 2 {
		t.Fatalf("%d runs for 51 calls, want 2", n)
	}
}

// A caller whose context ends stops waiting; the run goes on for the others.
func TestCallerContext(t *testing.T) {
	gate := make(chan struct{})
	g := New(func() (int, error) { <-gate; return 7, nil })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Do(ctx); err == nil {
		t.Fatal("no error for an ended context")
	}
	done := make(chan int)
	go func() { v, _ := g.Do(context.Background()); done <- v }()
	close(gate)
	if v := <-done; v != 7 {
		t.Fatalf("got %d", v)
	}
}

// waiting returns how many calls wait for the next run.
func (g *Group[T]) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.next == nil {
		return 0
	}
	return g.next.calls
}
