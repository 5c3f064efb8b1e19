package c2s

import (
	"sync/atomic"
	"time"
)

// writerPool runs the sessions' writers (session.writer) on goroutines that
// outlive one session's batch. A writer that has drained its session parks in
// the pool, and the next session with output takes it over instead of starting
// a goroutine: a room message's copies to 200 idle sessions would otherwise
// create 200 goroutines and grow 200 stacks on the TLS write path (11% of
// xmppd's CPU in the MUC fan-out profile, docs/bench.md "MUC: a goroutine per
// copy"). Every batch still goes out as one write from its own goroutine, so a
// client that does not read blocks only its own writer: when no parked writer
// is free, a new goroutine starts, as before.
//
// Parked writers are bounded (maxParked) and one that has waited idleTimeout
// without work exits, so a server that had a burst keeps no goroutines for it.
type writerPool struct {
	work      chan writeJob // unbuffered: a send succeeds only when a parked writer takes it
	done      <-chan struct{}
	parked    atomic.Int32
	maxParked int32
	idle      time.Duration
	started   atomic.Int64 // goroutines started (tests)
}

type writeJob struct {
	s *session
	c *conn
}

// Defaults: enough parked writers for a large room's fan-out; each holds a
// stack grown by the TLS write path (~8-16 KiB).
const (
	defaultMaxParkedWriters = 256
	writerIdleTimeout       = 10 * time.Second
)

func newWriterPool(maxParked int, idle time.Duration, done <-chan struct{}) *writerPool {
	return &writerPool{work: make(chan writeJob), done: done, maxParked: int32(maxParked), idle: idle}
}

// run starts s's writer for c on a parked goroutine, or a new one. It never
// blocks, so callers may hold s.mu.
func (p *writerPool) run(s *session, c *conn) {
	select {
	case p.work <- writeJob{s, c}:
		return
	default:
	}
	p.started.Add(1)
	go p.loop(writeJob{s, c})
}

func (p *writerPool) loop(j writeJob) {
	var t *time.Timer
	for {
		j.s.writer(j.c)
		j = writeJob{}
		if p.parked.Add(1) > p.maxParked {
			p.parked.Add(-1)
			return
		}
		if t == nil {
			t = time.NewTimer(p.idle)
		} else {
			t.Reset(p.idle)
		}
		select {
		case j = <-p.work:
			p.parked.Add(-1)
			t.Stop()
		case <-t.C:
			p.parked.Add(-1)
			return
		case <-p.done:
			p.parked.Add(-1)
			return
		}
	}
}
