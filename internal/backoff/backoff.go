// Package backoff is xedge's one exponential backoff: the delays between
// retries of something that fails (an iSCSI login, a storage re-persist, a
// restart), doubling from Min to Max, optionally jittered, reset on success.
//
// It sits at the root of the module (internal/) so that every part may use it
// whatever its import rules (storage, iscsi, netcfg, init, xmppd); it must not
// import any other xedge package.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields growing delays. The zero value is not useful: set Min and Max.
// Not safe for concurrent use (one per retry loop).
type Backoff struct {
	Min, Max time.Duration
	// Jitter spreads each delay uniformly over ±Jitter of it (0.2: ±20%), so
	// many nodes retrying the same thing do not do so in step. 0: none.
	Jitter float64
	// EqualJitter draws each delay uniformly from [d/2, d] instead (half of it
	// fixed, half random): never longer than the doubling delay. It overrides
	// Jitter.
	EqualJitter bool

	n int // delays handed out since the last Reset
}

// Delay is the n-th delay (n from 0) of a backoff from min doubling to max,
// without jitter: min<<n, capped at max.
func Delay(min, max time.Duration, n int) time.Duration {
	if n < 0 {
		n = 0
	}
	d := min
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if d > max || d <= 0 {
		d = max
	}
	return d
}

// Next returns the next delay and counts the attempt.
func (b *Backoff) Next() time.Duration {
	d := Delay(b.Min, b.Max, b.n)
	b.n++
	return b.Spread(d)
}

// Spread applies b's jitter (EqualJitter or Jitter) to d without counting an
// attempt: for a one-off delay outside the doubling, such as a quick retry
// after a Reset.
func (b *Backoff) Spread(d time.Duration) time.Duration {
	switch {
	case b.EqualJitter:
		d = d/2 + rand.N(d/2+1)
	case b.Jitter > 0:
		d = time.Duration(float64(d) * (1 - b.Jitter + 2*b.Jitter*rand.Float64()))
	}
	return d
}

// Peek is the delay Next would return, without jitter and without counting.
func (b *Backoff) Peek() time.Duration { return Delay(b.Min, b.Max, b.n) }

// Attempts is how many delays were handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.n }

// Reset starts again from Min (after a success).
func (b *Backoff) Reset() { b.n = 0 }

// Wait sleeps for Next() or until ctx ends, and returns ctx's error then.
func (b *Backoff) Wait(ctx context.Context) error {
	return Sleep(ctx, b.Next())
}

// Sleep waits d or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
