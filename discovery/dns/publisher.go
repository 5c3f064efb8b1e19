package dns

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"xedge/internal/backoff"
)

// PublisherConfig wires a Publisher.
type PublisherConfig struct {
	Params Params
	// Source returns the current cluster view; it is called every Poll and
	// after Notify, so it must be cheap and safe to call from any goroutine.
	Source func() View
	// Server is the embedded authoritative server (nil: none).
	Server *Server
	// Pusher sends RFC 2136 updates (nil: none).
	Pusher *Pusher
	// PushRole reports whether this node is the one that pushes updates
	// now, and which node does (for status output). Nil: always this node.
	PushRole func() (mine bool, who string)
	// Poll is how often the view is read (default 250ms); Notify reads at once.
	Poll time.Duration
	// LoadInterval: connection counts are sampled this often for weights and
	// the loaded rule (default 15s); membership, health and draining
	// changes apply at once. This keeps load noise from churning serials.
	LoadInterval time.Duration
	// Resync: the pusher re-checks the server this often even without a
	// change, repairing drift (default 60s).
	Resync time.Duration
	// MaxBackoff bounds the retry delay of a failing push (default 30s).
	MaxBackoff time.Duration
	Log        *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// LeaseRecheck is how long after becoming the pusher a second reconcile runs
// (longer than raft's leader lease, after which a deposed leader stops).
const LeaseRecheck = 1500 * time.Millisecond

// Publisher keeps the served zone and the pushed records in line with the
// cluster view.
type Publisher struct {
	cfg     PublisherConfig
	log     *slog.Logger
	builder *Builder
	wake    chan struct{}
	push    chan struct{}

	mu        sync.Mutex
	serial    uint32
	zone      *Zone
	result    Result
	text      string // canonical text of the last records, to spot changes
	changed   time.Time
	loads     map[string]int
	loadsAt   time.Time
	ustat     UpdateStatus
	listeners []chan struct{}

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// UpdateStatus is the state of RFC 2136 publishing.
type UpdateStatus struct {
	Server       string     `json:"server"`
	Zone         string     `json:"zone"`
	Key          string     `json:"key"`
	Pusher       string     `json:"pusher"`    // which node pushes
	ThisNode     bool       `json:"this_node"` // whether it is this one
	LastAttempt  time.Time  `json:"last_attempt,omitzero"`
	LastSuccess  time.Time  `json:"last_success,omitzero"`
	LastResult   string     `json:"last_result"` // ok, in-sync, failed, not-applied, idle
	LastError    string     `json:"last_error,omitempty"`
	LastReport   PushReport `json:"last_report"`
	PushedSerial uint32     `json:"pushed_serial"` // the local serial of the view last pushed
	Pushes       int        `json:"pushes"`
	Failures     int        `json:"failures"` // consecutive
	NextRetry    time.Time  `json:"next_retry,omitzero"`
}

// Status is what `xmppctl dns` shows.
type Status struct {
	Zone    string        `json:"zone"`
	Domain  string        `json:"domain"`
	Serial  uint32        `json:"serial"`
	Changed time.Time     `json:"changed"`
	Listen  string        `json:"listen,omitempty"`
	Queries uint64        `json:"queries"`
	Targets []Target      `json:"targets"`
	Loaded  []string      `json:"loaded,omitempty"`
	Records []string      `json:"records"`
	Update  *UpdateStatus `json:"update,omitempty"`
}

// NewPublisher returns a publisher; Start runs it.
func NewPublisher(cfg PublisherConfig) *Publisher {
	if cfg.Poll <= 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	if cfg.LoadInterval <= 0 {
		cfg.LoadInterval = 15 * time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PushRole == nil {
		cfg.PushRole = func() (bool, string) { return true, cfg.Params.Self }
	}
	p := &Publisher{cfg: cfg, log: cfg.Log.With("component", "dns"), builder: NewBuilder(cfg.Params),
		wake: make(chan struct{}, 1), push: make(chan struct{}, 1)}
	if cfg.Pusher != nil {
		pc := cfg.Pusher.Config()
		p.ustat = UpdateStatus{Server: pc.Server, Zone: pc.Zone, Key: pc.Key.Name, LastResult: "idle"}
	}
	return p
}

// Builder returns the record builder (host names, settings).
func (p *Publisher) Builder() *Builder { return p.builder }

// Notify asks for the view to be read now (a membership change).
func (p *Publisher) Notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Changes returns a channel that gets a value after every zone change (tests,
// benchmarks).
func (p *Publisher) Changes() <-chan struct{} {
	ch := make(chan struct{}, 1)
	p.mu.Lock()
	p.listeners = append(p.listeners, ch)
	p.mu.Unlock()
	return ch
}

// Start publishes the current view and then follows it.
func (p *Publisher) Start(ctx context.Context) error {
	p.refresh()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.done.Add(1)
	go func() { defer p.done.Done(); p.watch(ctx) }()
	if p.cfg.Pusher != nil {
		p.done.Add(1)
		go func() { defer p.done.Done(); p.pushLoop(ctx) }()
	}
	return nil
}

// Stop stops following the view. If this node pushes and other nodes remain
// in service, it first pushes the view without itself, so its records go
// before its listeners do (bounded by ctx).
func (p *Publisher) Stop(ctx context.Context) error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	p.done.Wait()
	p.cancel = nil
	if p.cfg.Pusher == nil {
		return nil
	}
	if mine, _ := p.cfg.PushRole(); !mine {
		return nil
	}
	v := p.cfg.Source()
	var rest []Node
	for _, n := range v.Nodes {
		if n.Name != p.cfg.Params.Self {
			rest = append(rest, n)
		}
	}
	others := false
	for _, n := range rest {
		others = others || (n.Healthy && n.InService)
	}
	if !others {
		return nil
	}
	v.Nodes = rest
	b := NewBuilder(p.cfg.Params)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := p.cfg.Pusher.Reconcile(pctx, b.Build(v).RRs); err != nil {
		p.log.Warn("dns update on leave failed; the next pusher will remove this node's records", "server", p.ustat.Server, "err", err)
	}
	return nil
}

func (p *Publisher) watch(ctx context.Context) {
	t := time.NewTicker(p.cfg.Poll)
	defer t.Stop()
	wasMine := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
		}
		p.refresh()
		if p.cfg.Pusher != nil {
			mine, _ := p.cfg.PushRole()
			if mine && !wasMine {
				// Became the pusher: reconcile at once, and again a moment
				// later, after a deposed leader's lease ran out (it may have
				// pushed its view in between).
				p.kick()
				time.AfterFunc(LeaseRecheck, p.kick)
			}
			wasMine = mine
		}
	}
}

func (p *Publisher) kick() {
	select {
	case p.push <- struct{}{}:
	default:
	}
}

// refresh reads the view, rebuilds and, if the records changed, installs a
// new zone with the next serial.
func (p *Publisher) refresh() {
	v := p.cfg.Source()
	now := p.cfg.Now()
	p.mu.Lock()
	if p.loads == nil || now.Sub(p.loadsAt) >= p.cfg.LoadInterval {
		p.loads = map[string]int{}
		for _, n := range v.Nodes {
			p.loads[n.Name] = n.Load
		}
		p.loadsAt = now
	}
	for i := range v.Nodes {
		if l, ok := p.loads[v.Nodes[i].Name]; ok {
			v.Nodes[i].Load = l
		} else {
			p.loads[v.Nodes[i].Name] = v.Nodes[i].Load
		}
	}
	res := p.builder.Build(v)
	text := recordsText(res.RRs)
	if text == p.text && p.zone != nil {
		p.mu.Unlock()
		return
	}
	p.serial = NextSerial(p.serial, now)
	prm := p.builder.Params()
	z := NewZone(prm.Zone, p.serial, prm.TTL, prm.Mbox, res.RRs)
	p.zone, p.result, p.text, p.changed = z, res, text, now
	ls := slices.Clone(p.listeners)
	p.mu.Unlock()
	if p.cfg.Server != nil {
		p.cfg.Server.SetZone(z)
	}
	p.log.Info("dns records changed", "serial", z.Serial, "targets", len(res.Targets), "loaded", res.Loaded)
	p.kick()
	for _, ch := range ls {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func recordsText(rrs []mdns.RR) string {
	var b strings.Builder
	for _, rr := range rrs {
		b.WriteString(rr.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// pushLoop pushes on every change, on becoming the pusher, every Resync, and
// retries failures with exponential backoff and jitter.
func (p *Publisher) pushLoop(ctx context.Context) {
	resync := time.NewTicker(p.cfg.Resync)
	defer resync.Stop()
	var retry <-chan time.Time
	bo := backoff.Backoff{Min: 500 * time.Millisecond, Max: p.cfg.MaxBackoff, EqualJitter: true}
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.push:
		case <-resync.C:
		case <-retry:
		}
		retry = nil
		mine, who := p.cfg.PushRole()
		p.mu.Lock()
		p.ustat.Pusher, p.ustat.ThisNode = who, mine
		rrs, serial := p.result.RRs, p.serial
		p.mu.Unlock()
		if !mine {
			continue
		}
		now := p.cfg.Now()
		rep, err := p.cfg.Pusher.Reconcile(ctx, rrs)
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.ustat.LastAttempt, p.ustat.LastReport = now, rep
		if err == nil {
			p.ustat.LastSuccess, p.ustat.LastError, p.ustat.Failures, p.ustat.NextRetry = p.cfg.Now(), "", 0, time.Time{}
			p.ustat.PushedSerial = serial
			p.ustat.LastResult = "ok"
			if rep.InSync {
				p.ustat.LastResult = "in-sync"
			} else {
				p.ustat.Pushes++
			}
			p.mu.Unlock()
			if lastErr != "" {
				p.log.Info("dns update works again", "server", p.ustat.Server, "zone", p.ustat.Zone)
			}
			if len(rep.Changed) > 0 {
				p.log.Info("dns update applied and verified", "server", p.ustat.Server, "changed", len(rep.Changed), "took", rep.Took.Round(time.Millisecond))
			}
			lastErr = ""
			bo.Reset()
			continue
		}
		p.ustat.Failures++
		p.ustat.LastError = err.Error()
		p.ustat.LastResult = "failed"
		level := slog.LevelError
		d, settle := time.Duration(0), false
		switch {
		case errors.Is(err, ErrNotApplied):
			p.ustat.LastResult = "not-applied"
		case errors.Is(err, ErrConcurrent):
			p.ustat.LastResult, level = "concurrent-change", slog.LevelWarn
			// Settle fast once the other writer stopped; later failures
			// double again from Min.
			bo.Reset()
			d, settle = bo.Spread(min(250*time.Millisecond, p.cfg.MaxBackoff)), true
		}
		if !settle {
			d = bo.Next()
		}
		p.ustat.NextRetry = p.cfg.Now().Add(d)
		p.mu.Unlock()
		if err.Error() != lastErr { // one log line per distinct failure
			p.log.Log(context.Background(), level, "dns update failed", "server", p.ustat.Server, "zone", p.ustat.Zone, "retry_in", d.Round(time.Millisecond), "err", err)
			lastErr = err.Error()
		}
		retry = time.After(d)
	}
}

// Zone returns the zone published now.
func (p *Publisher) Zone() *Zone {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.zone
}

// Status reports what is served and pushed.
func (p *Publisher) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	prm := p.builder.Params()
	st := Status{Zone: prm.Zone, Domain: prm.Domain, Serial: p.serial, Changed: p.changed,
		Targets: append([]Target{}, p.result.Targets...), Loaded: p.result.Loaded}
	if p.zone != nil {
		for _, rr := range p.zone.Records() {
			st.Records = append(st.Records, strings.ReplaceAll(rr.String(), "\t", " "))
		}
	}
	if p.cfg.Server != nil {
		st.Listen, st.Queries = p.cfg.Server.Addr(), p.cfg.Server.Queries()
	}
	if p.cfg.Pusher != nil {
		u := p.ustat
		if u.Pusher == "" {
			u.ThisNode, u.Pusher = p.cfg.PushRole()
		}
		st.Update = &u
	}
	return st
}
