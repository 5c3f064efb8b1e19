package vip

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"time"
)

// Hooks are keepalived's notify scripts. Each runs as `SCRIPT STATE VIP NODE`
// (STATE is master, backup or fault) on a transition of this node for a VIP: the
// state's own script first (Master, Backup, Fault), then Any. Scripts run one at a
// time in transition order, each bounded by Timeout (default 10 s); a failure is
// logged and never blocks the VIP.
type Hooks struct {
	Master, Backup, Fault, Any string
	Timeout                    time.Duration
}

// Notifier runs hooks in the background, in order, from a bounded queue.
type Notifier struct {
	hooks Hooks
	node  string
	log   *slog.Logger
	q     chan Transition
	done  chan struct{}
	// run executes one script (tests replace it).
	run func(ctx context.Context, script string, args ...string) error
}

// NewNotifier returns a notifier for node; Start it before Notify.
func NewNotifier(h Hooks, node string, log *slog.Logger) *Notifier {
	if h.Timeout <= 0 {
		h.Timeout = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &Notifier{hooks: h, node: node, log: log, q: make(chan Transition, 256), done: make(chan struct{}),
		run: func(ctx context.Context, script string, args ...string) error {
			out, err := exec.CommandContext(ctx, script, args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}}
}

// Start runs the queue until ctx ends.
func (n *Notifier) Start(ctx context.Context) {
	go func() {
		defer close(n.done)
		for {
			select {
			case <-ctx.Done():
				return
			case t := <-n.q:
				n.fire(ctx, t)
			}
		}
	}()
}

// Wait returns once the queue loop has ended (after its ctx ended).
func (n *Notifier) Wait() { <-n.done }

// Notify queues t; when the queue is full the transition is logged and dropped.
func (n *Notifier) Notify(t Transition) {
	select {
	case n.q <- t:
	default:
		n.log.Warn("vip notify queue full: hook skipped", "component", "vip", "vip", t.VIP, "state", t.To)
	}
}

func (n *Notifier) fire(ctx context.Context, t Transition) {
	specific := map[State]string{Master: n.hooks.Master, Backup: n.hooks.Backup, Fault: n.hooks.Fault}[t.To]
	for _, s := range []string{specific, n.hooks.Any} {
		if s == "" {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, n.hooks.Timeout)
		err := n.run(cctx, s, string(t.To), t.VIP, n.node)
		cancel()
		if err != nil {
			n.log.Warn("vip notify hook failed", "component", "vip", "script", s, "vip", t.VIP, "state", t.To, "err", err)
		}
	}
}
