package loadgen

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// rxConn is a TCP connection whose reads also return the kernel's receive time
// of the data (SO_TIMESTAMPNS: the software timestamp the kernel takes when a
// segment arrives, CLOCK_REALTIME; on loopback that is inside the sender's
// write). A latency measured to it leaves out the time the load generator
// itself needs before it gets to the bytes (its scheduler, TLS, parsing).
type rxConn struct {
	*net.TCPConn
	rc    syscall.RawConn
	oob   []byte
	stamp int64 // Unix ns of the newest segment of the last read; 0 none
	// The read in progress (one reader at a time: crypto/tls and the scanner
	// read from one goroutine), so that rc.Read gets the same closure each time.
	p    []byte
	n    int
	rerr error
	fn   func(fd uintptr) bool
}

func newRxConn(c net.Conn) (*rxConn, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("receive timestamps need a TCP connection, have %T", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("receive timestamps: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return nil, fmt.Errorf("receive timestamps: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("receive timestamps: setsockopt SO_TIMESTAMPNS: %w", serr)
	}
	r := &rxConn{TCPConn: tc, rc: rc, oob: make([]byte, syscall.CmsgSpace(16)*2)}
	r.fn = r.recv
	return r, nil
}

func (r *rxConn) recv(fd uintptr) bool {
	n, oobn, _, _, err := syscall.Recvmsg(int(fd), r.p, r.oob, 0)
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return false // wait for readiness (the poller honours deadlines)
	}
	r.n, r.rerr = n, err
	if err == nil {
		if ts := parseStamp(r.oob[:oobn]); ts != 0 {
			r.stamp = ts
		}
	}
	return true
}

// Read implements net.Conn.
func (r *rxConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.rerr = p, 0, nil
	err := r.rc.Read(r.fn)
	r.p = nil
	if err != nil {
		return 0, err // deadline exceeded or closed, as the net package words it
	}
	if r.rerr != nil {
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: os.NewSyscallError("recvmsg", r.rerr)}
	}
	if r.n == 0 {
		return 0, io.EOF
	}
	return r.n, nil
}

// parseStamp returns the SCM_TIMESTAMPNS time in b (control messages), Unix ns.
// The header is {Len uint64; Level, Type int32} on 64-bit Linux.
func parseStamp(b []byte) int64 {
	if syscall.SizeofCmsghdr != 16 {
		return 0
	}
	for len(b) >= syscall.SizeofCmsghdr {
		l := int(binary.NativeEndian.Uint64(b[0:8]))
		level := int32(binary.NativeEndian.Uint32(b[8:12]))
		typ := int32(binary.NativeEndian.Uint32(b[12:16]))
		if l < syscall.SizeofCmsghdr || l > len(b) {
			return 0
		}
		if level == syscall.SOL_SOCKET && typ == syscall.SCM_TIMESTAMPNS && l >= syscall.SizeofCmsghdr+16 {
			d := b[syscall.SizeofCmsghdr:]
			return int64(binary.NativeEndian.Uint64(d[0:8]))*1e9 + int64(binary.NativeEndian.Uint64(d[8:16]))
		}
		next := syscall.CmsgSpace(l - syscall.SizeofCmsghdr)
		if next > len(b) {
			return 0
		}
		b = b[next:]
	}
	return 0
}
