package c2s

import (
	"errors"
	"syscall"
)

const canWriteNoWait = true

// nowait is one non-blocking write(2) through a socket's RawConn. Its function
// value and results live with the connection (one per tryConn, used under its
// lock): a closure made per call escapes through the RawConn interface, and a
// room's fan-out makes one call per copy.
type nowait struct {
	b    []byte
	n    int
	err  error
	call func(fd uintptr) bool
}

func (w *nowait) write(fd uintptr) bool {
	for {
		w.n, w.err = syscall.Write(int(fd), w.b)
		if !errors.Is(w.err, syscall.EINTR) {
			return true // done, whatever it took: never wait for the socket here
		}
	}
}

// writeNoWait writes what the socket takes of b at once: one write(2) on the
// non-blocking descriptor, n < len(b) (possibly 0) when its send buffer is full.
// The connection's write deadline still applies: a deadline that has passed
// fails the call before any write.
func writeNoWait(rc syscall.RawConn, w *nowait, b []byte) (int, error) {
	if w.call == nil {
		w.call = w.write
	}
	w.b, w.n, w.err = b, 0, nil
	err := rc.Write(w.call)
	n, werr := w.n, w.err
	w.b, w.err = nil, nil
	switch {
	case err != nil:
		return 0, err
	case errors.Is(werr, syscall.EAGAIN):
		return 0, nil
	case werr != nil:
		return 0, werr
	}
	return n, nil
}
