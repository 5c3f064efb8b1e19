package c2s

import (
	"errors"
	"syscall"
)

const canWriteNoWait = true

// writeNoWait writes what the socket takes of b at once: one write(2) on the
// non-blocking descriptor, n < len(b) (possibly 0) when its send buffer is full.
// The connection's write deadline still applies: a deadline that has passed
// fails the call before any write.
func writeNoWait(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), b)
			if !errors.Is(werr, syscall.EINTR) {
				return true // done, whatever it took: never wait for the socket here
			}
		}
	})
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
