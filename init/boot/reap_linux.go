package boot

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reaper collects every child that exits — PID 1 inherits orphans — and hands the
// exit status of children someone waits for to that waiter. Exec'd children must be
// waited for through Wait, never exec.Cmd.Wait.
type Reaper struct {
	mu        sync.Mutex
	waiters   map[int]chan syscall.WaitStatus
	unclaimed map[int]syscall.WaitStatus
	order     []int
	sig       chan os.Signal
	stop      chan struct{}
}

const maxUnclaimed = 256

// NewReaper returns a reaper; Start begins reaping.
func NewReaper() *Reaper {
	return &Reaper{waiters: map[int]chan syscall.WaitStatus{}, unclaimed: map[int]syscall.WaitStatus{}}
}

// Start installs the SIGCHLD handler and reaps until Stop.
func (r *Reaper) Start() {
	r.sig = make(chan os.Signal, 16)
	r.stop = make(chan struct{})
	signal.Notify(r.sig, unix.SIGCHLD)
	go func() {
		for {
			r.reapAll()
			select {
			case <-r.sig:
			case <-r.stop:
				return
			}
		}
	}()
}

// Stop ends reaping.
func (r *Reaper) Stop() {
	signal.Stop(r.sig)
	close(r.stop)
}

func (r *Reaper) reapAll() {
	for i := 0; i < 10000; i++ {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.deliver(pid, syscall.WaitStatus(ws))
	}
}

func (r *Reaper) deliver(pid int, ws syscall.WaitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.waiters[pid]; ok {
		delete(r.waiters, pid)
		ch <- ws
		return
	}
	r.unclaimed[pid] = ws
	r.order = append(r.order, pid)
	for len(r.order) > maxUnclaimed {
		delete(r.unclaimed, r.order[0])
		r.order = r.order[1:]
	}
}

// Wait blocks until pid has exited and returns its status.
func (r *Reaper) Wait(pid int) syscall.WaitStatus {
	r.mu.Lock()
	if ws, ok := r.unclaimed[pid]; ok {
		delete(r.unclaimed, pid)
		r.mu.Unlock()
		return ws
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	r.mu.Unlock()
	return <-ch
}
