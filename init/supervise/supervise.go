// Package supervise runs one service (a child process or anything else behind a
// Runner) and restarts it when it exits, with exponential backoff and a heart-style
// limit: at most MaxRestarts restarts within Window, after which the service stays down
// and the supervisor says why.
//
// It knows nothing about xmppd, consoles or the network; it must not import other
// xedge packages but internal/backoff (the delays).
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"xedge/internal/backoff"
)

// Process is one running instance of a service.
type Process interface {
	PID() int
	// Wait blocks until the process has exited and describes how.
	Wait() error
	Signal(os.Signal) error
}

// Runner starts a new instance of the service.
type Runner interface {
	Start(ctx context.Context) (Process, error)
}

// Clock is time as the supervisor sees it (a fake one in tests).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Policy is the restart policy.
type Policy struct {
	MaxRestarts int           // restarts allowed within Window; then stay down
	Window      time.Duration // heart window
	BackoffMin  time.Duration // delay before the first restart; doubles per restart in the window
	BackoffMax  time.Duration
	StopTimeout time.Duration // SIGTERM, then SIGKILL after this long
}

// DefaultPolicy is 3 restarts in 30 minutes, 1 s..30 s backoff, 10 s to stop.
func DefaultPolicy() Policy {
	return Policy{MaxRestarts: 3, Window: 30 * time.Minute, BackoffMin: time.Second, BackoffMax: 30 * time.Second, StopTimeout: 10 * time.Second}
}

// State of a supervised service.
type State string

const (
	StateIdle     State = "idle"
	StateRunning  State = "running"
	StateBackoff  State = "backoff"
	StateGaveUp   State = "gave-up"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
)

// Status is a snapshot for consoles and tests.
type Status struct {
	Name     string
	State    State
	PID      int
	Since    time.Time
	Restarts int // restarts within the current window
	Total    int // restarts since boot
	LastExit string
	Reason   string // why it gave up
}

// EventKind says what happened.
type EventKind int

const (
	EventStarted EventKind = iota
	EventExited
	EventGaveUp
	EventStopped
)

// Event is delivered to the notify callback, in order, from the supervisor goroutine.
type Event struct {
	Kind    EventKind
	PID     int
	Err     error         // exit reason (EventExited) or start error
	Backoff time.Duration // delay before the restart (EventExited)
	Reason  string        // EventGaveUp
}

// Supervisor keeps one service running.
type Supervisor struct {
	name   string
	runner Runner
	policy Policy
	clock  Clock
	log    *slog.Logger
	notify func(Event)

	mu      sync.Mutex
	status  Status
	proc    Process
	history []time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	revive  chan struct{}
}

// Option configures a Supervisor.
type Option func(*Supervisor)

// WithClock replaces the wall clock (tests).
func WithClock(c Clock) Option { return func(s *Supervisor) { s.clock = c } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Supervisor) { s.log = l } }

// WithNotify sets a callback for every event.
func WithNotify(f func(Event)) Option { return func(s *Supervisor) { s.notify = f } }

// New returns a supervisor; nothing runs until Start.
func New(name string, r Runner, p Policy, opts ...Option) *Supervisor {
	s := &Supervisor{name: name, runner: r, policy: p, clock: realClock{}, log: slog.Default(), notify: func(Event) {}}
	for _, o := range opts {
		o(s)
	}
	s.status = Status{Name: name, State: StateIdle}
	s.revive = make(chan struct{}, 1)
	return s
}

// Start launches the service and its supervision loop.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return fmt.Errorf("supervise %s: already started", s.name)
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.loop(ctx)
	return nil
}

// Status returns a snapshot.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Restarts = s.inWindowLocked(s.clock.Now())
	return st
}

// Signal sends sig to the running instance.
func (s *Supervisor) Signal(sig os.Signal) error {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("supervise %s: not running", s.name)
	}
	return p.Signal(sig)
}

// Revive clears the restart history of a service that gave up and starts it again.
func (s *Supervisor) Revive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status.State != StateGaveUp {
		return fmt.Errorf("supervise %s: %s, not given up", s.name, s.status.State)
	}
	s.history = nil
	select {
	case s.revive <- struct{}{}:
	default:
	}
	return nil
}

// Stop terminates the service (SIGTERM, then SIGKILL after StopTimeout) and ends
// supervision. It waits until the process is gone or ctx ends.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("supervise %s: stop: %w", s.name, ctx.Err())
	}
}

func (s *Supervisor) set(f func(*Status)) {
	s.mu.Lock()
	f(&s.status)
	s.mu.Unlock()
}

func (s *Supervisor) inWindowLocked(now time.Time) int {
	n := 0
	for _, t := range s.history {
		if now.Sub(t) < s.policy.Window {
			n++
		}
	}
	return n
}

func (s *Supervisor) loop(ctx context.Context) {
	defer close(s.done)
	defer func() {
		s.set(func(st *Status) { st.State, st.PID = StateStopped, 0 })
		s.notify(Event{Kind: EventStopped})
	}()
	for {
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		now := s.clock.Now()
		s.mu.Lock()
		kept := s.history[:0]
		for _, t := range s.history {
			if now.Sub(t) < s.policy.Window {
				kept = append(kept, t)
			}
		}
		s.history = kept
		n := len(s.history)
		s.status.LastExit = describeExit(err)
		if n >= s.policy.MaxRestarts {
			reason := fmt.Sprintf("%s exited (%s) after %d restarts within %s: staying down", s.name, s.status.LastExit, n, s.policy.Window)
			s.status.State, s.status.PID, s.status.Reason, s.status.Since = StateGaveUp, 0, reason, now
			s.mu.Unlock()
			s.log.Error("service gave up", "service", s.name, "reason", reason)
			s.notify(Event{Kind: EventGaveUp, Err: err, Reason: reason})
			select {
			case <-ctx.Done():
				return
			case <-s.revive:
				s.set(func(st *Status) { st.Reason = "" })
				continue
			}
		}
		backoff := backoff.Delay(s.policy.BackoffMin, s.policy.BackoffMax, n)
		s.history = append(s.history, now)
		s.status.State, s.status.PID, s.status.Since = StateBackoff, 0, now
		s.status.Total++
		s.mu.Unlock()
		s.log.Warn("service exited, restarting", "service", s.name, "exit", describeExit(err), "backoff", backoff)
		s.notify(Event{Kind: EventExited, Err: err, Backoff: backoff})
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(backoff):
		}
	}
}

// runOnce starts one instance and waits for it to exit or for ctx to end, in which
// case it stops the instance.
func (s *Supervisor) runOnce(ctx context.Context) error {
	p, err := s.runner.Start(ctx)
	if err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	s.mu.Lock()
	s.proc = p
	s.status.State, s.status.PID, s.status.Since = StateRunning, p.PID(), s.clock.Now()
	s.mu.Unlock()
	s.log.Info("service started", "service", s.name, "pid", p.PID())
	s.notify(Event{Kind: EventStarted, PID: p.PID()})
	exited := make(chan error, 1)
	go func() { exited <- p.Wait() }()
	defer func() {
		s.mu.Lock()
		s.proc = nil
		s.mu.Unlock()
	}()
	select {
	case err := <-exited:
		if err == nil {
			err = errors.New("exited with status 0")
		}
		return err
	case <-ctx.Done():
	}
	s.set(func(st *Status) { st.State = StateStopping })
	_ = p.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		return err
	case <-s.clock.After(s.policy.StopTimeout):
	}
	s.log.Warn("service ignored SIGTERM, killing", "service", s.name, "timeout", s.policy.StopTimeout)
	_ = p.Signal(syscall.SIGKILL)
	return <-exited
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
