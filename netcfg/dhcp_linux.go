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

	"xedge/internal/backoff"
)

// DHCP keeps one interface's DHCPv4 lease: Acquire gets and applies the first lease,
// Start keeps it renewed (rebinding and starting over when renewals fail), Stop
// releases it.
type DHCP struct {
	ifname  string
	log     *slog.Logger
	apply   func(Lease) error
	timeout time.Duration

	mu       sync.Mutex
	client   *nclient4.Client
	raw      *nclient4.Lease
	lease    Lease
	cancel   context.CancelFunc
	done     chan struct{}
	onExpire func(Lease)
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
			return d.install(raw, "discover")
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

func (d *DHCP) install(raw *nclient4.Lease, via string) (Lease, error) {
	l := leaseFromACK(d.ifname, raw.ACK, time.Now())
	l.Via = via
	if d.apply != nil {
		if err := d.apply(l); err != nil {
			return Lease{}, fmt.Errorf("apply lease on %s: %w", d.ifname, err)
		}
	}
	d.mu.Lock()
	d.raw, d.lease = raw, l
	d.mu.Unlock()
	d.log.Info("dhcp lease", "via", via, "addr", l.Addr, "router", l.Router, "server", l.Server, "lease", l.Duration)
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

// renewLoop follows RFC 2131 4.4.5: at T1 it renews with the server that gave the
// lease (retrying until T2), at T2 it rebinds with any server (retrying until the
// lease expires), and at expiry it takes the address off the link (the expire
// callback) and starts over with a DISCOVER until it gets a lease again. Every wait
// is bounded by the lease times and by ctx.
func (d *DHCP) renewLoop(ctx context.Context) {
	defer close(d.done)
	for ctx.Err() == nil {
		d.mu.Lock()
		l, raw, c := d.lease, d.raw, d.client
		d.mu.Unlock()
		if !sleep(ctx, time.Until(l.ObtainedAt.Add(l.Renew))) {
			return
		}
		renew := func(rctx context.Context) (*nclient4.Lease, error) {
			return c.Renew(rctx, raw, dhcpv4.WithRequestedOptions(requestedOptions...))
		}
		if d.retryUntil(ctx, "renew", l.ObtainedAt.Add(l.Rebind), renew) {
			continue
		}
		rebind := func(rctx context.Context) (*nclient4.Lease, error) { return rebindLease(rctx, c, raw) }
		if d.retryUntil(ctx, "rebind", l.Expires(), rebind) {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		d.expire(l)
		bo := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
		for ctx.Err() == nil {
			actx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := d.Acquire(actx)
			cancel()
			if err == nil {
				break
			}
			d.log.Warn("dhcp: no lease yet", "err", err)
			if bo.Wait(ctx) != nil {
				return
			}
		}
	}
}

// retryUntil calls try until it gets a lease (installed; true) or deadline passes
// (false). After a failure it waits half the time left, at least a second (RFC 2131
// says 60 s; leases here may be short).
func (d *DHCP) retryUntil(ctx context.Context, what string, deadline time.Time, try func(context.Context) (*nclient4.Lease, error)) bool {
	for ctx.Err() == nil && time.Now().Before(deadline) {
		dl := time.Now().Add(10 * time.Second)
		if deadline.Before(dl) {
			dl = deadline
		}
		rctx, cancel := context.WithDeadline(ctx, dl)
		nraw, err := try(rctx)
		cancel()
		if err == nil {
			if _, err := d.install(nraw, what); err != nil {
				d.log.Warn("dhcp "+what+": apply failed", "err", err)
			}
			return true
		}
		var nak *nclient4.ErrNak
		if errors.As(err, &nak) {
			d.log.Warn("dhcp "+what+": server refused the lease (NAK)", "err", err)
			return false
		}
		d.log.Warn("dhcp "+what+" failed", "err", err, "until", time.Until(deadline).Round(time.Millisecond))
		left := time.Until(deadline)
		if !sleep(ctx, min(left, max(left/2, time.Second))) {
			return false
		}
	}
	return false
}

// rebindLease broadcasts a REQUEST for the leased address without a server
// identifier, so any server may answer (RFC 2131 REBINDING).
func rebindLease(ctx context.Context, c *nclient4.Client, raw *nclient4.Lease) (*nclient4.Lease, error) {
	req, err := dhcpv4.NewRenewFromAck(raw.ACK, dhcpv4.WithRequestedOptions(requestedOptions...),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))
	if err != nil {
		return nil, fmt.Errorf("rebind request: %w", err)
	}
	req.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
	req.Options.Del(dhcpv4.OptionServerIdentifier)
	resp, err := c.SendAndRead(ctx, c.RemoteAddr(), req, nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	if err != nil {
		return nil, fmt.Errorf("rebind: %w", err)
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return nil, &nclient4.ErrNak{Offer: raw.Offer, Nak: resp}
	}
	return &nclient4.Lease{Offer: raw.Offer, ACK: resp, CreationTime: time.Now()}, nil
}

// SetExpire sets what happens when the lease runs out without renewal (the address
// must come off the link; see Unconfigure). Call before Start.
func (d *DHCP) SetExpire(fn func(Lease)) {
	d.mu.Lock()
	d.onExpire = fn
	d.mu.Unlock()
}

func (d *DHCP) expire(l Lease) {
	d.mu.Lock()
	fn := d.onExpire
	d.raw, d.lease = nil, Lease{Interface: d.ifname}
	d.mu.Unlock()
	d.log.Error("dhcp lease expired: address removed, asking for a new lease", "addr", l.Addr, "server", l.Server)
	if fn != nil {
		fn(l)
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
