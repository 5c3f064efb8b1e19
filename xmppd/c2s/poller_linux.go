package c2s

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// poller waits for input on every parked stream with one epoll instance and one
// goroutine, so an idle stream holds no goroutine (and no stack) at all. A parked
// connection is registered one-shot and level-triggered: input that arrived before
// the registration wakes it at once. Every epoll_ctl on a connection's descriptor
// runs inside RawConn.Control, which holds the descriptor open, so a closed (and
// possibly reused) descriptor number is never touched; the kernel drops a closed
// descriptor from the epoll set by itself, so whoever closes a parked connection
// wakes it (conn.closeRaw) and its reader sees the close.
type poller struct {
	log  *slog.Logger
	epfd int
	file *os.File // epfd, waited on in Go's own netpoller (loop)

	mu     sync.Mutex
	conns  map[uint64]*conn // parked, by registration id
	nextID uint64
	closed bool
	parks  int // successful parks so far (tests)
	done   chan struct{}
	once   sync.Once
}

// newPoller returns a started poller, or an error when epoll is unavailable (the
// streams then park in their own goroutine).
func newPoller(log *slog.Logger) (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("c2s: epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("c2s: epoll fd: %w", err)
	}
	// The epoll descriptor is itself pollable: Go's netpoller tells when it has
	// events, so the poller never blocks in epoll_wait holding the runtime's P
	// (with GOMAXPROCS=1 that stalls every goroutine until sysmon takes it back).
	f := os.NewFile(uintptr(epfd), "c2s-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("c2s: epoll fd: %w", err)
	}
	p := &poller{log: log, epfd: epfd, file: f, conns: map[uint64]*conn{}, nextID: 1, done: make(chan struct{})}
	go p.loop(rc)
	return p, nil
}

func setID(ev *syscall.EpollEvent, id uint64) {
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
}
func getID(ev *syscall.EpollEvent) uint64 { return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 }

// park registers c, whose reader goroutine then returns without touching c again;
// wake starts a new one. The result says whether c is parked, or why not.
func (p *poller) park(c *conn) parkResult {
	if p == nil {
		return parkUnsupported
	}
	rc, err := c.rawConn()
	if err != nil {
		return parkUnsupported
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return parkUnsupported
	}
	id := p.nextID
	p.nextID++
	var cerr error
	err = rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
		setID(&ev, id)
		cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	switch {
	case err != nil:
		return parkClosed // the connection is closed: its read reports that
	case cerr != nil:
		p.log.Warn("epoll registration failed; this stream waits in its own goroutine", "err", cerr)
		return parkUnsupported
	}
	c.parkID = id
	p.conns[id] = c
	p.parks++
	if d := c.rd.deadline; !d.IsZero() {
		c.parkTimer = time.AfterFunc(time.Until(d), func() { p.wakeID(id) })
	}
	return parkOK
}

// wake resumes c if it is parked (it was closed, or must look at its stream again).
func (p *poller) wake(c *conn) {
	if p == nil {
		return
	}
	p.mu.Lock()
	id := c.parkID
	p.mu.Unlock()
	if id != 0 {
		p.wakeID(id)
	}
}

// wakeID resumes the connection parked under id, once.
func (p *poller) wakeID(id uint64) {
	p.mu.Lock()
	c := p.conns[id]
	if c == nil {
		p.mu.Unlock()
		return
	}
	delete(p.conns, id)
	c.parkID = 0
	if c.parkTimer != nil {
		c.parkTimer.Stop()
		c.parkTimer = nil
	}
	if rc, err := c.rawConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
	}
	p.mu.Unlock()
	go c.unpark()
}

// loop delivers readiness until stop: it drains the epoll instance without
// blocking (epoll_wait with a zero timeout) and waits for more in Go's netpoller.
func (p *poller) loop(rc syscall.RawConn) {
	defer close(p.done)
	evs := make([]syscall.EpollEvent, 128)
	var werr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(fd), evs, 0)
			if err != nil {
				if errors.Is(err, syscall.EINTR) {
					continue
				}
				werr = err
				return true
			}
			if n == 0 {
				return false // drained: wait until the epoll descriptor is readable
			}
			for i := 0; i < n; i++ {
				p.wakeID(getID(&evs[i]))
			}
		}
	})
	if werr == nil && err != nil && !errors.Is(err, os.ErrClosed) {
		werr = err
	}
	p.mu.Lock()
	stopping := p.closed // stop closed the descriptor on purpose ("use of closed file")
	p.mu.Unlock()
	if stopping {
		return
	}
	if werr != nil {
		p.log.Error("epoll_wait failed; parked streams are woken and wait in their own goroutines", "err", werr)
		p.shut()
	}
}

// shut refuses new parks and wakes every parked connection.
func (p *poller) shut() {
	p.mu.Lock()
	p.closed = true
	ids := make([]uint64, 0, len(p.conns))
	for id := range p.conns {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	for _, id := range ids {
		p.wakeID(id)
	}
}

// stop wakes every parked connection, ends the loop and frees the epoll instance.
func (p *poller) stop() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		p.shut()
		p.file.Close() // ends loop's wait; the descriptor closes once it returns
		<-p.done
	})
}

// stats reports how many connections are parked and how many parks succeeded (tests).
func (p *poller) stats() (parked, parks int) {
	if p == nil {
		return 0, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns), p.parks
}
