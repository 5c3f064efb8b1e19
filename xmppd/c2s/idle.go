package c2s

import (
	"errors"
	"os"
	"time"
)

// Idle connections hold no decoder buffer and only a shallow reader stack: when the
// decoder has consumed all input, the reader waits for the socket to become readable
// without it (waitReadable), then takes a buffer from a pool again. Whatever crypto/tls
// has already buffered is drained first by a non-blocking probe (probeTLS), so no
// input can be stranded behind the wait.

// errIdle is returned by connReader instead of blocking when the decoder is between
// elements with nothing buffered: the reader then parks (conn.park).
var errIdle = errors.New("c2s: stream idle")

// connReader is the decoder's input: c.nc, plus a byte taken by probeTLS.
type connReader struct {
	c       *conn
	park    bool // return errIdle instead of blocking when the decoder is idle
	woke    bool // the socket was readable after park: the next read goes to it
	pending bool
	b       [1]byte
}

func (r *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.pending {
		p[0] = r.b[0]
		r.pending = false
		return 1, nil
	}
	if r.woke {
		r.woke = false
	} else if r.park && r.c.dec.Idle() {
		return 0, errIdle
	}
	return r.c.nc.Read(p)
}

// reset drops a pending byte (stream restart after STARTTLS: nothing read before the
// handshake may be used after it).
func (r *connReader) reset() { r.pending, r.woke = false, false }

// park waits, without holding the decoder's buffers, until input arrives or the read
// deadline (already set on c.raw by next) passes. It returns nil when the decoder
// should read again (input, or an error the decoder's own read will report), or
// os.ErrDeadlineExceeded.
func (c *conn) park(deadline time.Time) error {
	if c.secure {
		// crypto/tls may hold decrypted or undecrypted input already read from the
		// socket: take one byte with an expired deadline. A timeout means it holds no
		// complete record; a partial one stays buffered in crypto/tls and the rest of
		// it makes the socket readable.
		c.raw.SetReadDeadline(time.Unix(1, 0))
		n, err := c.nc.Read(c.rd.b[:])
		c.raw.SetReadDeadline(deadline)
		if n > 0 {
			c.rd.pending = true
			return nil
		}
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			c.rd.woke = true // EOF, alert, ...: crypto/tls repeats it to the decoder
			return nil
		}
	}
	released := c.dec.ReleaseBuffers()
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
