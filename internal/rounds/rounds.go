// Package rounds coalesces calls that each need a run of one operation that
// starts after the call: a barrier, a sync. One run is in flight at a time; a
// call joins the next run, which starts when the current one ends, so every
// call made meanwhile shares it. Callers get the run's result.
//
// It owns nothing else and must not import other xedge packages.
package rounds

import (
	"context"
	"sync"
)

// Group runs op in rounds. The zero Group is not usable: use New.
type Group[T any] struct {
	op func() (T, error)

	mu   sync.Mutex
	cur  *round[T] // in flight
	next *round[T] // waiting for cur to end
	runs int
}

type round[T any] struct {
	done  chan struct{}
	calls int // calls that joined it
	val   T
	err   error
}

// New returns a Group that runs op (which bounds its own duration).
func New[T any](op func() (T, error)) *Group[T] { return &Group[T]{op: op} }

// Do returns the result of a run of op that started after Do was called, or
// ctx's error if ctx ends first (the run goes on for the others).
func (g *Group[T]) Do(ctx context.Context) (T, error) {
	g.mu.Lock()
	r := g.next
	if r == nil {
		r = &round[T]{done: make(chan struct{})}
		g.next = r
		if g.cur == nil {
			g.startLocked()
		}
	}
	r.calls++
	g.mu.Unlock()
	select {
	case <-r.done:
		return r.val, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Runs returns how many runs of op have started.
func (g *Group[T]) Runs() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.runs
}

func (g *Group[T]) startLocked() {
	r := g.next
	g.cur, g.next = r, nil
	g.runs++
	go func() {
		r.val, r.err = g.op()
		g.mu.Lock()
		g.cur = nil
		if g.next != nil {
			g.startLocked()
		}
		g.mu.Unlock()
		close(r.done)
	}()
}
