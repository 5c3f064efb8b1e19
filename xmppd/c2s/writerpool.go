package c2s

import (
	"runtime"
	"sync"
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
// Sessions on a TCP socket (tryConn) first go through the batch writer: one
// goroutine that takes every session with output queued meanwhile and writes
// each one's output in one write that never waits (session.tryWrite). A room
// message's copies thus leave in one loop of writes, as a server that only
// writes prepared bytes would send them, instead of waking a writer goroutine
// per copy; only a session whose socket did not take everything (a client that
// reads slowly) gets a writer of its own, which waits for it. Up to GOMAXPROCS
// batch writers run at once, each taking what is queued when it looks.
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

	mu          sync.Mutex
	ready       []writeJob // sessions waiting for a batch writer
	batchers    int        // batch writers running
	maxBatchers int
	handedOn    atomic.Int64 // sessions the batch writers left to their own writers (tests)
}

// writeJob is a session's writer for c, or (batch) a batch writer.
type writeJob struct {
	s     *session
	c     *conn
	batch bool
}

// Defaults: enough parked writers for a large room's fan-out; each holds a
// stack grown by the TLS write path (~8-16 KiB).
const (
	defaultMaxParkedWriters = 256
	writerIdleTimeout       = 10 * time.Second
)

func newWriterPool(maxParked int, idle time.Duration, done <-chan struct{}) *writerPool {
	return &writerPool{work: make(chan writeJob), done: done, maxParked: int32(maxParked), idle: idle, maxBatchers: runtime.GOMAXPROCS(0)}
}

// run starts s's writer for c: through a batch writer when c's socket can be
// written without waiting, else on a parked goroutine or a new one. It never
// blocks, so callers may hold s.mu.
func (p *writerPool) run(s *session, c *conn) {
	if c.try == nil {
		p.dispatch(writeJob{s: s, c: c})
		return
	}
	p.mu.Lock()
	p.ready = append(p.ready, writeJob{s: s, c: c})
	start := p.batchers < p.maxBatchers
	if start {
		p.batchers++
	}
	p.mu.Unlock()
	if start {
		p.dispatch(writeJob{batch: true})
	}
}

// dispatch runs j on a parked goroutine, or a new one.
func (p *writerPool) dispatch(j writeJob) {
	select {
	case p.work <- j:
		return
	default:
	}
	p.started.Add(1)
	go p.loop(j)
}

// batch is a batch writer: it works through the ready sessions until none is
// left, handing each that needs more than one write without waiting to its own
// writer.
func (p *writerPool) batch() {
	bp := writeBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledWrite {
			*bp = (*bp)[:0]
			writeBufs.Put(bp)
		}
	}()
	var jobs []writeJob
	for {
		// Let the goroutines that are ready run first (readers routing more
		// input): under load a session's queue then holds more for its one
		// write; when nothing else waits this returns at once.
		runtime.Gosched()
		p.mu.Lock()
		if len(p.ready) == 0 {
			p.batchers--
			if p.ready == nil {
				p.ready = jobs[:0] // the next batch's list
			}
			p.mu.Unlock()
			return
		}
		jobs, p.ready = p.ready, jobs[:0]
		p.mu.Unlock()
		// One clock read per 64 sessions, not per write (deadlines and
		// keepalive idleness have seconds of slack).
		var now time.Time
		for i, j := range jobs {
			if i%64 == 0 {
				now = time.Now()
			}
			if !j.s.tryWrite(j.c, bp, now) {
				p.handedOn.Add(1)
				p.dispatch(j)
			}
			jobs[i] = writeJob{}
		}
	}
}

func (p *writerPool) loop(j writeJob) {
	var t *time.Timer
	for {
		if j.batch {
			p.batch()
		} else {
			j.s.writer(j.c)
		}
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
