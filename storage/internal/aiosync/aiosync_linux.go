//go:build linux && (amd64 || arm64)

package aiosync

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// iocb is struct iocb of <linux/aio_abi.h> on a little-endian 64-bit machine
// (aio_key before aio_rw_flags).
type iocb struct {
	data      uint64
	key       uint32
	rwFlags   int32
	opcode    uint16
	reqprio   int16
	fildes    uint32
	buf       uint64
	nbytes    uint64
	offset    int64
	reserved2 uint64
	flags     uint32
	resfd     uint32
}

// ioEvent is struct io_event.
type ioEvent struct {
	data, obj uint64
	res, res2 int64
}

const (
	cmdFdsync = 3 // IOCB_CMD_FDSYNC
	flagResfd = 1 // IOCB_FLAG_RESFD: signal aio_resfd (an eventfd) on completion
)

// syncer is one AIO context with its eventfd; it has one sync in flight at a
// time. Its iocb lives on the heap, so it stays put while the kernel reads it.
type syncer struct {
	ctx  uintptr
	efd  *os.File
	rc   syscall.RawConn
	cb   iocb
	cbp  *iocb
	ev   ioEvent
	buf  [8]byte
	gone bool
}

// pool keeps a few idle syncers; unavailable is set once the kernel has no AIO.
var (
	pool        = make(chan *syncer, 8)
	unavailable atomic.Bool
)

func newSyncer() (*syncer, error) {
	s := &syncer{}
	if _, _, e := unix.Syscall(unix.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&s.ctx)), 0); e != 0 {
		return nil, fmt.Errorf("io_setup: %w", e)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Syscall(unix.SYS_IO_DESTROY, s.ctx, 0, 0)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	// A non-blocking descriptor handed to os.NewFile joins the netpoller.
	s.efd = os.NewFile(uintptr(efd), "aiosync-eventfd")
	if s.rc, err = s.efd.SyscallConn(); err != nil {
		s.close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	s.cbp = &s.cb
	return s, nil
}

func (s *syncer) close() {
	if s.gone {
		return
	}
	s.gone = true
	unix.Syscall(unix.SYS_IO_DESTROY, s.ctx, 0, 0)
	s.efd.Close()
}

// errNotQueued means the kernel refused the request before running it: the
// caller may sync the plain way instead.
var errNotQueued = errors.New("aio: not queued")

// The three calls of a sync (io_submit of the request, the read of the
// non-blocking eventfd once the netpoller says it is readable, io_getevents
// with a zero timeout) never block, and are made as raw system calls: a call
// through the runtime's entersyscall wakes its monitor thread (sysmon) if it
// went to sleep while the process was idle, and sysmon then runs every 20-80
// us for milliseconds, each time taking the CPU from the goroutines serving
// clients (docs/bench.md, "MUC: the archive's syncs wake the runtime's
// monitor").

// sync runs one IOCB_CMD_FDSYNC on fd and waits for it in the netpoller.
func (s *syncer) sync(fd int) error {
	if err := s.submit(fd); err != nil {
		return err
	}
	if err := s.wait(); err != nil {
		// The request is in flight and its completion cannot be told apart
		// from a later one's: this context is not used again.
		s.close()
		return err
	}
	return nil
}

// submit queues an IOCB_CMD_FDSYNC of fd that signals the eventfd when done.
func (s *syncer) submit(fd int) error {
	var efd int
	if err := s.rc.Control(func(f uintptr) { efd = int(f) }); err != nil {
		return fmt.Errorf("%w: %w", errNotQueued, err)
	}
	s.cb = iocb{opcode: cmdFdsync, fildes: uint32(fd), flags: flagResfd, resfd: uint32(efd)}
	n, _, e := unix.RawSyscall(unix.SYS_IO_SUBMIT, s.ctx, 1, uintptr(unsafe.Pointer(&s.cbp)))
	runtime.KeepAlive(s)
	if e != 0 || n != 1 {
		return fmt.Errorf("%w: io_submit: %v", errNotQueued, e)
	}
	return nil
}

// wait parks until the eventfd counts the completion, then reaps it.
func (s *syncer) wait() error {
	for {
		var rerr error
		if err := s.rc.Read(func(f uintptr) bool {
			_, _, e := unix.RawSyscall(unix.SYS_READ, f, uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)))
			rerr = nil
			if e != 0 {
				rerr = e
			}
			return rerr != unix.EAGAIN
		}); err != nil {
			return fmt.Errorf("aio: eventfd: %w", err)
		}
		if rerr != nil && rerr != unix.EINTR {
			return fmt.Errorf("aio: eventfd: %w", rerr)
		}
		ts := unix.Timespec{}
		n, _, e := unix.RawSyscall6(unix.SYS_IO_GETEVENTS, s.ctx, 1, 1, uintptr(unsafe.Pointer(&s.ev)), uintptr(unsafe.Pointer(&ts)), 0)
		if e != 0 && e != unix.EINTR {
			return fmt.Errorf("aio: io_getevents: %w", e)
		}
		if n == 1 {
			if s.ev.res < 0 {
				return syscall.Errno(-s.ev.res)
			}
			return nil
		}
	}
}

func fdatasync(fd int) error {
	if !unavailable.Load() {
		var s *syncer
		select {
		case s = <-pool:
		default:
			var err error
			if s, err = newSyncer(); errors.Is(err, unix.ENOSYS) {
				unavailable.Store(true)
			}
		}
		if s != nil {
			err := s.sync(fd)
			if !s.gone {
				select {
				case pool <- s:
				default:
					s.close()
				}
			}
			if !errors.Is(err, errNotQueued) {
				async.Add(1)
				return err
			}
		}
	}
	fallback.Add(1)
	return unix.Fdatasync(fd)
}
