package c2s

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// parkResult is the poller's answer to a park.
type parkResult int

const (
	parkOK          parkResult = iota // parked: the poller resumes the stream
	parkClosed                        // the connection is closed: read to see it
	parkUnsupported                   // no poller for this stream: wait in its goroutine
)

// rawConn returns the TCP connection's raw descriptor access.
func (c *conn) rawConn() (syscall.RawConn, error) {
	sc, ok := c.raw.(syscall.Conn)
	if !ok {
		return nil, errors.New("c2s: no raw access to the connection")
	}
	return sc.SyscallConn()
}

// Idle connections hold no decoder buffer and only a shallow reader stack: when the
// decoder has consumed all input and nothing more arrives within Config.ParkAfter, the
// reader waits for the socket to become readable without it (waitReadable), then
// takes a buffer from a pool again. A busy stream never parks, so its reads cost
// what they did before (no extra syscall per stanza).

// defaultParkAfter is Config.ParkAfter's default.
const defaultParkAfter = time.Second

// errIdle is returned by connReader instead of blocking when the decoder is between
// elements and no input came within Config.ParkAfter: the reader then parks (conn.park).
var errIdle = errors.New("c2s: stream idle")

// connReader is the decoder's input: c.nc, read with a grace period before parking.
// It owns c.raw's read deadline: armed is what is set there, so a deadline that is
// already in place costs no call (at one stanza per read, re-arming the grace and
// idle deadlines around every read was ~5% of the server's CPU).
type connReader struct {
	c        *conn
	park     bool      // may return errIdle when the decoder is idle
	woke     bool      // the socket was readable after park: the next read goes to it
	deadline time.Time // the stream's read deadline (idle or auth timeout; zero: none)
	armed    time.Time // the read deadline set on c.raw
}

// arm sets c.raw's read deadline to d unless it is set already.
func (r *connReader) arm(d time.Time) {
	if !d.Equal(r.armed) {
		r.c.raw.SetReadDeadline(d)
		r.armed = d
	}
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.woke || !r.park || !r.c.dec.Idle() {
		r.woke = false
		r.arm(r.deadline)
		return r.c.nc.Read(p)
	}
	after := r.c.srv.cfg.ParkAfter
	now := time.Now()
	grace := now.Add(after)
	if !r.deadline.IsZero() && r.deadline.Before(grace) {
		r.arm(r.deadline) // the idle timeout comes first: not worth parking
		return r.c.nc.Read(p)
	}
	// A timeout inside crypto/tls's Read means it holds no complete record (a
	// partial one stays buffered there; the rest of it makes the socket readable),
	// so nothing can be stranded behind the wait. Timeouts are not sticky in
	// crypto/tls. A grace deadline armed earlier is kept while at least half the
	// grace period is left: the stream parks after ParkAfter/2 to ParkAfter idle.
	if left := r.armed.Sub(now); r.armed.IsZero() || left < after/2 || left > after {
		r.arm(grace)
	}
	n, err := r.c.nc.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if n == 0 {
			return 0, errIdle
		}
		err = nil
	}
	return n, err
}

// reset forgets a wake-up (stream restart).
func (r *connReader) reset() { r.woke = false }

// park waits, without holding the decoder's buffers, until input arrives or the read
// deadline (set on c.raw by next) passes. It returns nil when the decoder should
// read again (input, or an error the decoder's own read will report), or
// os.ErrDeadlineExceeded.
func (c *conn) park() error {
	released := c.dec.ReleaseBuffers()
	c.rd.arm(c.rd.deadline) // waitReadable waits under the stream's deadline
	ok, err := waitReadable(c.raw)
	if released {
		c.dec.Reacquire()
	}
	if !ok {
		c.noPark = true // no readiness wait here: block in the decoder instead
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	c.rd.woke = true
	return nil
}
