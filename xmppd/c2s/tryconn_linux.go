package c2s

import (
	"errors"
	"os"
	"syscall"
	"unsafe"
)

const canWriteNoWait = true

// The socket's reads and the batch writer's writes are made as raw system
// calls: read(2) and write(2) on the non-blocking descriptor, through its
// RawConn (which keeps the descriptor from being closed meanwhile and waits for
// readiness with the deadlines), without the runtime's entersyscall. Those
// calls never block, and entersyscall is what wakes the runtime's monitor
// thread (sysmon) whenever it had gone to sleep with the process idle: a room
// message arriving on an idle server woke it every time, and it then polled
// every ~80 us for the next milliseconds, each time a context switch on the
// core doing the fan-out (~2,600 a second and ~550 ms/s of run-queue wait in
// the MUC latency phase; docs/bench.md, "MUC: raw socket calls").

// sockOp is one such call. Its function value and results live with the
// connection (one for reads and one for writes, each used under a lock): a
// closure made per call escapes through the RawConn interface, and a room's
// fan-out makes one write per copy.
type sockOp struct {
	b    []byte
	n    int
	err  error
	call func(fd uintptr) bool
}

// sysIO is read(2) or write(2) of b on fd as a raw system call.
func sysIO(trap, fd uintptr, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	r, _, e := syscall.RawSyscall(trap, fd, uintptr(p), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func (op *sockOp) write(fd uintptr) bool {
	for {
		op.n, op.err = sysIO(syscall.SYS_WRITE, fd, op.b)
		if !errors.Is(op.err, syscall.EINTR) {
			return true // done, whatever it took: never wait for the socket here
		}
	}
}

func (op *sockOp) read(fd uintptr) bool {
	for {
		op.n, op.err = sysIO(syscall.SYS_READ, fd, op.b)
		switch {
		case errors.Is(op.err, syscall.EINTR):
		case errors.Is(op.err, syscall.EAGAIN):
			return false // nothing yet: RawConn waits for the socket (or the deadline)
		default:
			return true
		}
	}
}

// writeNoWait writes what the socket takes of b at once: one write(2) on the
// non-blocking descriptor, n < len(b) (possibly 0) when its send buffer is full.
// The connection's write deadline still applies: a deadline that has passed
// fails the call before any write.
func writeNoWait(rc syscall.RawConn, op *sockOp, b []byte) (int, error) {
	n, werr, err := op.do(b, rc.Write, false)
	switch {
	case err != nil:
		return 0, err
	case errors.Is(werr, syscall.EAGAIN):
		return 0, nil
	case werr != nil:
		return 0, os.NewSyscallError("write", werr)
	}
	return n, nil
}

// readRaw reads into b as a net.Conn does: it waits for data (or the read
// deadline) and returns n == 0 with no error at the end of the stream.
func readRaw(rc syscall.RawConn, op *sockOp, b []byte) (int, error) {
	n, rerr, err := op.do(b, rc.Read, true)
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	}
	return n, nil
}

// do makes op's call (read(2) if read, else write(2)) on b through the
// RawConn's Read or Write (via): n and sysErr are the system call's, err the
// RawConn's (a deadline, a closed connection).
func (op *sockOp) do(b []byte, via func(func(uintptr) bool) error, read bool) (n int, sysErr, err error) {
	if op.call == nil { // bound once: a method value made per call would be allocated each time
		if read {
			op.call = op.read
		} else {
			op.call = op.write
		}
	}
	op.b, op.n, op.err = b, 0, nil
	err = via(op.call)
	n, sysErr = op.n, op.err
	op.b, op.err = nil, nil
	return n, sysErr, err
}
