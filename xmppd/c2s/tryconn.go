package c2s

import (
	"net"
	"sync"
	"syscall"
)

// tryConn is a stream's TCP connection as its TLS layer (or, without TLS, its
// writes) sees it. It lets the batch writer (writerpool.go) write a session's
// output without ever waiting on a client: while try is set, Write hands the
// socket what it takes at once (one non-blocking write) and keeps the rest in
// spill, reporting the whole as written so that a record TLS has sealed is never
// cut short. The session's own writer then writes the spill, waiting as any
// write does (with its deadline), and every later Write, in either mode, writes
// the spill first: the bytes leave in the order they were written.
//
// A socket with room takes the whole write, so a room message's copies to 200
// idle sessions leave in one loop of writes on one goroutine, where each used
// to wake a writer goroutine of its own (docs/bench.md).
type tryConn struct {
	net.Conn
	raw syscall.RawConn

	mu    sync.Mutex
	try   bool
	spill []byte
	nw    nowait
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
	if !t.try {
		if err := t.flushLocked(); err != nil {
			return 0, err
		}
		return t.Conn.Write(b)
	}
	rest := b
	if len(t.spill) == 0 {
		n, err := writeNoWait(t.raw, &t.nw, b)
		if err != nil {
			return n, &net.OpError{Op: "write", Net: "tcp", Source: t.LocalAddr(), Addr: t.RemoteAddr(), Err: err}
		}
		rest = b[n:]
	}
	t.spill = append(t.spill, rest...)
	return len(b), nil
}

// setTry switches the no-wait mode on or off.
func (t *tryConn) setTry(on bool) {
	t.mu.Lock()
	t.try = on
	t.mu.Unlock()
}

// pending reports whether spilled bytes wait for a write that may wait.
func (t *tryConn) pending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.spill) > 0
}

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
			return err
		}
	}
	t.spill = nil
	return nil
}
