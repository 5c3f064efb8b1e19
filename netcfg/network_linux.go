package netcfg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"xedge/internal/backoff"
)

// NetworkConfig configures Network.
type NetworkConfig struct {
	Links      []string      // interfaces to run DHCP on (default: EthernetLinks())
	Timeout    time.Duration // how long Start waits for a first lease (default 10 s)
	Grace      time.Duration // after the first lease, how long Start waits for the other links (default 1 s)
	Retry      time.Duration // first wait before a link without a lease asks again (default 2 s, doubling to 1 min)
	Static     *Lease        // applied when no link got a lease within Timeout: Interface, Addr, Router, DNS (nil: none)
	ResolvConf string        // written from the primary lease or the static settings ("": not written)
	OnLease    func(Lease)   // every new or renewed lease (after it is applied)
	OnExpire   func(Lease)   // a lease ran out (its address is already off the link)
	Log        *slog.Logger
}

// Network runs DHCP on every link at once and keeps every lease renewed, including
// a lease that arrives long after boot: links without a lease keep asking in the
// background and get renewals as soon as they have one. It applies each lease
// (address, MTU, routes; the default route on one link only), writes resolv.conf
// from the primary lease, and falls back to a static address when no lease came.
type Network struct {
	cfg NetworkConfig
	log *slog.Logger

	mu        sync.Mutex
	clients   map[string]*DHCP
	leases    map[string]Lease
	defaultIf string
	primary   string
	first     chan struct{}
	firstOnce sync.Once
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// NewNetwork returns a Network for cfg; Start runs it.
func NewNetwork(cfg NetworkConfig) *Network {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = time.Second
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Network{cfg: cfg, log: cfg.Log.With("component", "netcfg"), clients: map[string]*DHCP{},
		leases: map[string]Lease{}, first: make(chan struct{})}
}

// Start brings every link up and asks for leases; it returns the primary lease once
// the first lease plus the grace period are in (the lowest-named link with a lease,
// preferring the one with the default route), or the static fallback after Timeout,
// or an error when there is neither. The DHCP work goes on in the background until
// Stop either way.
func (n *Network) Start(ctx context.Context) (Lease, error) {
	links := n.cfg.Links
	if len(links) == 0 {
		var err error
		if links, err = EthernetLinks(); err != nil {
			return Lease{}, err
		}
	}
	if len(links) == 0 {
		return Lease{}, errors.New("no ethernet interfaces (no driver for the NIC?)")
	}
	rctx, cancel := context.WithCancel(context.Background())
	n.mu.Lock()
	n.cancel = cancel
	n.mu.Unlock()
	for _, l := range links {
		n.wg.Add(1)
		go n.run(rctx, l)
	}
	timeout := time.NewTimer(n.cfg.Timeout)
	defer timeout.Stop()
	select {
	case <-n.first:
		select {
		case <-time.After(n.cfg.Grace):
		case <-ctx.Done():
		}
	case <-timeout.C:
	case <-ctx.Done():
	}
	n.mu.Lock()
	var leased []string
	for name := range n.leases {
		leased = append(leased, name)
	}
	sort.Strings(leased)
	if n.defaultIf != "" {
		n.primary = n.defaultIf
	} else if len(leased) > 0 {
		n.primary = leased[0]
	}
	primary, ok := n.leases[n.primary]
	n.mu.Unlock()
	if ok {
		n.writeResolv(primary)
		return primary, nil
	}
	if s := n.cfg.Static; s != nil {
		l := *s
		if err := LinkUp(l.Interface); err != nil {
			return Lease{}, err
		}
		if err := Configure(l, true); err != nil {
			return Lease{}, fmt.Errorf("static fallback: %w", err)
		}
		n.mu.Lock()
		n.primary = l.Interface
		n.mu.Unlock()
		n.writeResolv(l)
		n.log.Warn("no DHCP lease: static address applied (DHCP keeps trying)", "if", l.Interface, "addr", l.Addr, "router", l.Router)
		return l, nil
	}
	return Lease{}, fmt.Errorf("no DHCP lease on %s within %s (still trying in the background)", strings.Join(links, ","), n.cfg.Timeout)
}

func (n *Network) writeResolv(l Lease) {
	if n.cfg.ResolvConf == "" || len(l.DNS) == 0 {
		return
	}
	if err := WriteResolvConf(n.cfg.ResolvConf, l); err != nil {
		n.log.Warn("resolv.conf", "err", err)
	}
}

// run gets a lease on one link, retrying with backoff for as long as ctx lives, then
// keeps it renewed.
func (n *Network) run(ctx context.Context, link string) {
	defer n.wg.Done()
	d := NewDHCP(link, n.cfg.Log, n.apply)
	d.SetExpire(func(l Lease) {
		if err := Unconfigure(l); err != nil {
			n.log.Warn("remove expired address", "if", link, "err", err)
		}
		n.mu.Lock()
		delete(n.leases, link)
		n.mu.Unlock()
		if n.cfg.OnExpire != nil {
			n.cfg.OnExpire(l)
		}
	})
	n.mu.Lock()
	n.clients[link] = d
	n.mu.Unlock()
	bo := backoff.Backoff{Min: n.cfg.Retry, Max: max(n.cfg.Retry, time.Minute)}
	for first := true; ctx.Err() == nil; first = false {
		t := 10 * time.Second
		if first {
			t = n.cfg.Timeout
		}
		actx, cancel := context.WithTimeout(ctx, t)
		_, err := d.Acquire(actx)
		cancel()
		if err == nil {
			break
		}
		if first {
			n.log.Info("no DHCP lease yet; asking again in the background", "if", link, "err", err)
		}
		if bo.Wait(ctx) != nil {
			return
		}
	}
	if ctx.Err() != nil {
		return
	}
	if err := d.Start(ctx); err != nil {
		n.log.Warn("dhcp renewals", "if", link, "err", err)
	}
}

// apply configures a new or renewed lease; the default route goes on one link.
func (n *Network) apply(l Lease) error {
	n.mu.Lock()
	def := l.Router.IsValid() && (n.defaultIf == "" || n.defaultIf == l.Interface)
	if def {
		n.defaultIf = l.Interface
	}
	n.leases[l.Interface] = l
	primary := n.primary == l.Interface
	n.mu.Unlock()
	if err := Configure(l, def); err != nil {
		return err
	}
	n.firstOnce.Do(func() { close(n.first) })
	if primary {
		n.writeResolv(l)
	}
	if n.cfg.OnLease != nil {
		n.cfg.OnLease(l)
	}
	return nil
}

// Client returns the DHCP client of a link (its Lease is zero until it has one), or
// nil for a link Network does not run.
func (n *Network) Client(link string) *DHCP {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.clients[link]
}

// Leases returns the current lease of every link that has one, sorted by link.
func (n *Network) Leases() []Lease {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Lease, 0, len(n.leases))
	for _, l := range n.leases {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Interface < out[j].Interface })
	return out
}

// Stop ends every DHCP loop and releases the leases.
func (n *Network) Stop(ctx context.Context) error {
	n.mu.Lock()
	cancel := n.cancel
	n.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	n.mu.Lock()
	clients := make([]*DHCP, 0, len(n.clients))
	for _, d := range n.clients {
		clients = append(clients, d)
	}
	n.mu.Unlock()
	var errs []error
	for _, d := range clients {
		if err := d.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
