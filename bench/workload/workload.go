// Package workload runs the benchmark's measurements against one XMPP server
// through bench/loadgen: user provisioning (in-band registration, roster
// subscriptions), idle-session memory, login rate, one-to-one chat throughput and
// latency, and presence fan-out. Every phase has a deadline and a bounded count.
//
// It owns what is measured and how; starting servers is bench/servers' job, and
// it must not import xmppd.
package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"xedge/bench/loadgen"
)

// Target is the server under test.
type Target struct {
	Name   string
	Addr   string
	Domain string
	RSS    func() (int64, error)   // resident memory of the server process tree
	CPU    func() (float64, error) // CPU seconds the server has used
	PID    func() int              // the server's process (0: unknown), for its run-queue wait
	// ServerCPU is the CPU the server is pinned to (-1: none), ClientCPU the
	// generator's: what else ran on them is measured in the MUC workload.
	ServerCPU, ClientCPU int
	Restart              func(context.Context) error
	Log                  *slog.Logger
	// Verifier checks the server's certificate on every TLS connection (verified
	// in full once, then pinned: see loadgen.Verifier); nil: not checked.
	Verifier *loadgen.Verifier
	// WriteRosters, if set, stores the given rosters in the server directly
	// (offline provisioning; see ProvisionRosters); nil: over XMPP.
	WriteRosters func(ctx context.Context, r Rosters) error
	// WriteArchive, if set, stores the MAM workload's archive directly (n
	// messages from owner to peers; see MAMQuery) and returns how many the owner's
	// archive holds; nil: over XMPP.
	WriteArchive func(ctx context.Context, owner string, peers, n int) (int, error)
}

func (t *Target) opts(tls bool) loadgen.Options {
	return loadgen.Options{Addr: t.Addr, Domain: t.Domain, StartTLS: tls, Timeout: 30 * time.Second, Verifier: t.Verifier}
}

// User returns the name and password of benchmark user i of a pool. The password
// is prefix-independent "pw<i>" so tsung's scheme (password = passwd + id) works.
func User(prefix string, i int) (string, string) {
	n := strconv.Itoa(i)
	return prefix + n, "pw" + n
}

// Parallel runs fn(i) for i in [0, n) on at most workers goroutines, stopping at
// the first error or when ctx ends.
func Parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return parent.Err()
}

// Register creates users prefix0..prefix(n-1) by in-band registration, 50 at a
// time; existing accounts are fine.
func Register(ctx context.Context, t *Target, prefix string, n int) error {
	start := time.Now()
	err := Parallel(ctx, n, 50, func(ctx context.Context, i int) error {
		u, p := User(prefix, i)
		var last error
		for attempt := range 3 {
			if attempt > 0 {
				time.Sleep(200 * time.Millisecond)
			}
			// Over TLS whenever offered (all three servers offer STARTTLS; xmppd
			// refuses registration in plaintext even when TLS is optional).
			o := t.opts(false)
			o.TLSIfOffered = true
			c, err := loadgen.Dial(ctx, o)
			if err != nil {
				last = err
				continue
			}
			err = c.Register(u, p)
			c.Abort()
			if err == nil || errors.Is(err, loadgen.ErrConflict) {
				return nil
			}
			last = err
		}
		return fmt.Errorf("register %s: %w", u, last)
	})
	if err != nil {
		return err
	}
	t.Log.Info("users registered", "server", t.Name, "prefix", prefix, "n", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// loginAll logs n sessions in (TLS or not), 50 at a time: session i is user
// i % users (users <= 0 means n users, one session each) with resource r<i>.
func loginAll(ctx context.Context, t *Target, prefix string, n, users int, tls bool) ([]*loadgen.Conn, error) {
	return loginAllOpts(ctx, t, prefix, n, users, t.opts(tls))
}

// loginAllOpts is loginAll with the connections' options (Resource is set per
// connection).
func loginAllOpts(ctx context.Context, t *Target, prefix string, n, users int, opts loadgen.Options) ([]*loadgen.Conn, error) {
	if users <= 0 || users > n {
		users = n
	}
	conns := make([]*loadgen.Conn, n)
	err := Parallel(ctx, n, 50, func(ctx context.Context, i int) error {
		u, p := User(prefix, i%users)
		o := opts
		o.Resource = "r" + strconv.Itoa(i)
		c, err := loadgen.Login(ctx, o, u, p)
		if err != nil {
			return fmt.Errorf("login %s: %w", u, err)
		}
		conns[i] = c
		return nil
	})
	if err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []*loadgen.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Abort()
		}
	}
}

// cpuMeter measures server CPU use over an interval.
type cpuMeter struct {
	t     *Target
	start time.Time
	cpu0  float64
	self0 float64
}

// selfCPU returns this process's user+system CPU seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// client returns the load generator's CPU use as a fraction of one core since
// start: near 1.0 means the generator, not the server, limited the figure.
func (m cpuMeter) client() float64 {
	el := time.Since(m.start).Seconds()
	if el <= 0 {
		return 0
	}
	return (selfCPU() - m.self0) / el
}

func startCPU(t *Target) cpuMeter {
	m := cpuMeter{t: t, start: time.Now(), self0: selfCPU()}
	if t.CPU != nil {
		m.cpu0, _ = t.CPU()
	}
	return m
}

// share returns the server's CPU use as a fraction of one core since start.
func (m cpuMeter) share() float64 {
	if m.t.CPU == nil {
		return 0
	}
	c, err := m.t.CPU()
	if err != nil {
		return 0
	}
	el := time.Since(m.start).Seconds()
	if el <= 0 {
		return 0
	}
	return (c - m.cpu0) / el
}
