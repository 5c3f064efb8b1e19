package netcfg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// DHCP keeps one interface's DHCPv4 lease: Acquire gets and applies the first lease,
// Start keeps it renewed (rebinding and starting over when renewals fail), Stop
// releases it.
type DHCP struct {
	ifname  string
	log     *slog.Logger
	apply   func(Lease) error
	timeout time.Duration

	mu     sync.Mutex
	client *nclient4.Client
	raw    *nclient4.Lease
	lease  Lease
	cancel context.CancelFunc
	done   chan struct{}
}

// NewDHCP returns a client for ifname. apply is called with every new or renewed
// lease (it configures the address; see Configure); it may be nil.
func NewDHCP(ifname string, log *slog.Logger, apply func(Lease) error) *DHCP {
	if log == nil {
		log = slog.Default()
	}
	return &DHCP{ifname: ifname, log: log.With("if", ifname), apply: apply, timeout: 2 * time.Second}
}

// Lease returns the current lease (zero before Acquire succeeded).
func (d *DHCP) Lease() Lease {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lease
}

// Acquire brings the link up and runs DISCOVER/OFFER/REQUEST/ACK until ctx ends.
func (d *DHCP) Acquire(ctx context.Context) (Lease, error) {
	if err := LinkUp(d.ifname); err != nil {
		return Lease{}, err
	}
	d.mu.Lock()
	if d.client == nil {
		c, err := nclient4.New(d.ifname, nclient4.WithTimeout(d.timeout), nclient4.WithRetry(3))
		if err != nil {
			d.mu.Unlock()
			return Lease{}, fmt.Errorf("dhcp client on %s: %w", d.ifname, err)
		}
		d.client = c
	}
	c := d.client
	d.mu.Unlock()
	var lastErr error
	for attempt := 0; attempt < 100 && ctx.Err() == nil; attempt++ {
		raw, err := c.Request(ctx, dhcpv4.WithRequestedOptions(requestedOptions...))
		if err == nil {
			return d.install(raw)
		}
		lastErr = err
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return Lease{}, fmt.Errorf("dhcp on %s: %w", d.ifname, lastErr)
}

func (d *DHCP) install(raw *nclient4.Lease) (Lease, error) {
	l := leaseFromACK(d.ifname, raw.ACK, time.Now())
	if d.apply != nil {
		if err := d.apply(l); err != nil {
			return Lease{}, fmt.Errorf("apply lease on %s: %w", d.ifname, err)
		}
	}
	d.mu.Lock()
	d.raw, d.lease = raw, l
	d.mu.Unlock()
	d.log.Info("dhcp lease", "addr", l.Addr, "router", l.Router, "server", l.Server, "lease", l.Duration)
	return l, nil
}

// Start keeps the lease renewed in the background until Stop or ctx ends.
func (d *DHCP) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.raw == nil {
		return errors.New("dhcp: start before a lease was acquired")
	}
	if d.done != nil {
		return nil
	}
	ctx, d.cancel = context.WithCancel(ctx)
	d.done = make(chan struct{})
	go d.renewLoop(ctx)
	return nil
}

// renewLoop renews at T1, retries until T2, then rebinds by a fresh request; every
// wait is bounded by the lease times and by ctx.
func (d *DHCP) renewLoop(ctx context.Context) {
	defer close(d.done)
	for ctx.Err() == nil {
		d.mu.Lock()
		l, raw, c := d.lease, d.raw, d.client
		d.mu.Unlock()
		wait := time.Until(l.ObtainedAt.Add(l.Renew))
		if !sleep(ctx, wait) {
			return
		}
		renewed := false
		for ctx.Err() == nil && time.Now().Before(l.ObtainedAt.Add(l.Rebind)) {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			nraw, err := c.Renew(rctx, raw, dhcpv4.WithRequestedOptions(requestedOptions...))
			cancel()
			if err == nil {
				if _, err := d.install(nraw); err != nil {
					d.log.Warn("dhcp renew apply failed", "err", err)
				}
				renewed = true
				break
			}
			d.log.Warn("dhcp renew failed", "err", err)
			// Retry after half the time left to T2, at least 5 s (RFC 2131 4.4.5).
			left := time.Until(l.ObtainedAt.Add(l.Rebind)) / 2
			if !sleep(ctx, max(left, 5*time.Second)) {
				return
			}
		}
		if renewed || ctx.Err() != nil {
			continue
		}
		// Rebinding: ask anyone for a lease until the old one expires or a new one comes.
		actx, cancel := context.WithDeadline(ctx, l.ObtainedAt.Add(l.Duration+time.Minute))
		_, err := d.Acquire(actx)
		cancel()
		if err != nil {
			d.log.Error("dhcp lease lost", "err", err)
			if !sleep(ctx, 5*time.Second) {
				return
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Stop ends renewals and releases the lease.
func (d *DHCP) Stop(ctx context.Context) error {
	d.mu.Lock()
	cancel, done, c, raw := d.cancel, d.done, d.client, d.raw
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if c != nil {
		c.Close()
	}
	if raw == nil {
		return nil
	}
	// A release is unicast to the server; sent from the raw socket it would carry
	// source 0.0.0.0, which the server's kernel drops as martian. Send it from a UDP
	// socket bound to the leased address instead.
	uc, err := nclient4.New(d.ifname, nclient4.WithUnicast(&net.UDPAddr{IP: raw.ACK.YourIPAddr, Port: nclient4.ClientPort}))
	if err != nil {
		return fmt.Errorf("dhcp release on %s: %w", d.ifname, err)
	}
	defer uc.Close()
	if err := uc.Release(raw); err != nil {
		return fmt.Errorf("dhcp release on %s: %w", d.ifname, err)
	}
	return nil
}
