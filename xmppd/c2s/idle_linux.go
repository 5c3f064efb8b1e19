package c2s

import (
	"net"
	"syscall"
)

// waitReadable blocks until nc has input to read (or EOF, or an error) or its read
// deadline passes, without reading anything. ok is false if nc offers no raw access.
func waitReadable(nc net.Conn) (ok bool, err error) {
	sc, isSC := nc.(syscall.Conn)
	if !isSC {
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, nil
	}
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Data, EOF or an error other than "would block": the real read sees it.
		return e != syscall.EAGAIN && e != syscall.EWOULDBLOCK
	})
	return true, err
}
