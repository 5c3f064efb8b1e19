package c2s

import (
	"net"
	"syscall"
)

// ackNow asks the kernel to acknowledge pending input at once (TCP_QUICKACK:
// Linux sends an ACK it had delayed as soon as the option is set). Used after
// the TLS handshake: crypto/tls sends its session tickets with the server's first
// flight, so the client's Finished gets no reply to piggyback on, and a client
// with Nagle's algorithm on holds its next stream header until that ACK — a
// delayed ACK, 40 ms minimum. Best effort: an error only means the delay stays.
func ackNow(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
