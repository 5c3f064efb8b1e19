package c2s

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Inline writes (writeOrKickLocked) are for small writes to a socket that is
// nearly drained: its unacknowledged and unsent bytes (SIOCOUTQ) plus the
// write stay within a quarter of its send buffer as first read, so the
// kernel queues the write at once (a TCP send waits only when the queued
// bytes, with their buffers' overhead, reach the send buffer). On loopback, or
// to a client that keeps up, that is every write; to one that falls behind,
// none.
const inlineMaxWrite = 8 << 10

// writeRoom reports whether a write of n bytes to c's socket completes without
// waiting for the client. Only the goroutine that holds c's writer role calls
// it (the fields it caches are that role's).
func (s *session) writeRoom(c *conn, n int) bool {
	if n > inlineMaxWrite {
		return false
	}
	if s.roomConn != c {
		s.roomConn, s.roomRC, s.roomBuf = c, nil, 0
		sc, ok := c.raw.(syscall.Conn)
		if !ok {
			return false
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		var buf int
		if rc.Control(func(fd uintptr) { buf, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) }) != nil || err != nil {
			return false
		}
		s.roomRC, s.roomBuf = rc, buf
	}
	if s.roomRC == nil {
		return false
	}
	outq := -1
	if s.roomRC.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil {
			outq = v
		}
	}) != nil || outq < 0 {
		return false
	}
	return outq+n+1024 <= s.roomBuf/4
}
