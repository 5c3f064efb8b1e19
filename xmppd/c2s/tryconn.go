package c2s

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// tryConn is a stream's TCP connection as its TLS layer (or, without TLS, its
// reads and writes) sees it. It lets the batch writer (writerpool.go) write a
// session's output without ever waiting on a client: while try is set, Write
// hands the socket what it takes at once (one non-blocking write) and keeps the
// rest in spill, reporting the whole as written so that a record TLS has sealed
// is never cut short. The session's own writer then writes the spill, waiting as
// any write does (with its deadline), and every later Write, in either mode,
// writes the spill first: the bytes leave in the order they were written.
//
// A socket with room takes the whole write, so a room message's copies to 200
// idle sessions leave in one loop of writes on one goroutine, where each used
// to wake a writer goroutine of its own (docs/bench.md). Those writes and every
// Read are raw system calls (tryconn_linux.go says why).
type tryConn struct {
	net.Conn
	raw syscall.RawConn

	// try and spilled are atomics so that the batch writer's per-copy
	// setTry/Write/setTry/pending takes mu once, in Write.
	try     atomic.Bool // the no-wait mode
	spilled atomic.Bool // len(spill) > 0 (stored under mu)

	mu    sync.Mutex
	spill []byte
	wop   sockOp // the no-wait writes' (under mu)

	rmu sync.Mutex
	rop sockOp // Read's (under rmu)
}

// Read reads as net.Conn's Read does (deadlines included), with read(2) as a
// raw system call (through the connection's own Read under -race: race_on.go).
func (t *tryConn) Read(b []byte) (int, error) {
	if raceEnabled {
		return t.Conn.Read(b)
	}
	return t.readRaw(b)
}

func (t *tryConn) readRaw(b []byte) (int, error) {
	t.rmu.Lock()
	n, err := readRaw(t.raw, &t.rop, b)
	t.rmu.Unlock()
	if err != nil {
		return 0, t.opError("read", err)
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// opError is err as net.Conn's methods return it: a *net.OpError for op (the
// RawConn's own errors already are one, for its "raw-" op).
func (t *tryConn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		c := *oe
		c.Op = op
		return &c
	}
	return &net.OpError{Op: op, Net: "tcp", Source: t.LocalAddr(), Addr: t.RemoteAddr(), Err: err}
}

// newTryConn wraps nc, or returns nil when nc has no socket to write to
// without waiting (not a TCP connection, or a platform without writeNoWait).
func newTryConn(nc net.Conn) *tryConn {
	if !canWriteNoWait {
		return nil
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &tryConn{Conn: nc, raw: rc}
}

func (t *tryConn) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.try.Load() {
		if err := t.flushLocked(); err != nil {
			return 0, err
		}
		return t.Conn.Write(b)
	}
	rest := b
	if len(t.spill) == 0 {
		n, err := writeNoWait(t.raw, &t.wop, b)
		if err != nil {
			return n, t.opError("write", err)
		}
		rest = b[n:]
	}
	if len(rest) > 0 {
		t.spill = append(t.spill, rest...)
		t.spilled.Store(true)
	}
	return len(b), nil
}

// setTry switches the no-wait mode on or off.
func (t *tryConn) setTry(on bool) { t.try.Store(on) }

// pending reports whether spilled bytes wait for a write that may wait.
func (t *tryConn) pending() bool { return t.spilled.Load() }

// flush writes the spill, waiting as any write does.
func (t *tryConn) flush() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.flushLocked()
}

func (t *tryConn) flushLocked() error {
	for len(t.spill) > 0 {
		n, err := t.Conn.Write(t.spill)
		t.spill = t.spill[n:]
		if err != nil {
			t.spilled.Store(len(t.spill) > 0)
			return err
		}
	}
	t.spill = nil
	t.spilled.Store(false)
	return nil
}
