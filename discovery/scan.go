package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Scan defaults: a /22 at most (1,022 hosts), 100 connection attempts per
// second, 300 ms per attempt, at most 32 attempts in flight.
const (
	DefaultScanMaxBits = 22
	DefaultScanRate    = 100
	DefaultScanTimeout = 300 * time.Millisecond
	maxScanInFlight    = 32
)

// Scanner probes the hosts of the node's own subnets for a TCP port (the gossip
// port): one bounded, rate-limited pass of connect probes; it stops by itself.
type Scanner struct {
	Prefixes []netip.Prefix // subnets to scan, each with this node's address (Addr() is skipped)
	Port     uint16
	Rate     int           // probes started per second (default DefaultScanRate)
	Timeout  time.Duration // per probe (default DefaultScanTimeout)
	MaxBits  int           // largest subnet scanned: a wider prefix is cut to the /MaxBits around the node (default 22)
	// Dial is the probe (tests); default a TCP connect.
	Dial func(ctx context.Context, addr netip.AddrPort) error
}

// ScanResult is what one pass found.
type ScanResult struct {
	Probed int              // probes sent
	Found  []netip.AddrPort // hosts whose port accepted a connection
}

// Hosts lists the host addresses of p to probe, bounded to the /maxBits
// containing p.Addr(), without the network and broadcast addresses (IPv4) and
// without p.Addr() itself. IPv6 prefixes wider than /maxBits+96 are cut the same
// way (a /118 by default: scanning a /64 is never sensible).
func Hosts(p netip.Prefix, maxBits int) []netip.Addr {
	if maxBits <= 0 {
		maxBits = DefaultScanMaxBits
	}
	self := p.Addr()
	limit := maxBits
	if self.Is6() && !self.Is4In6() {
		limit = maxBits + 96
	}
	bits := p.Bits()
	if bits < limit {
		bits = limit
	}
	q, err := self.Prefix(bits)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	first := q.Addr()
	hostBits := self.BitLen() - bits
	n := 1 << hostBits
	a := first
	for i := 0; i < n; i++ {
		skip := a == self
		if self.Is4() && hostBits >= 2 && (i == 0 || i == n-1) {
			skip = true // network and broadcast addresses
		}
		if !skip {
			out = append(out, a)
		}
		a = a.Next()
	}
	return out
}

// Run performs one pass and calls found (from one goroutine at a time) for every
// host that accepted a connection. It returns when every probe finished or ctx
// ended.
func (s *Scanner) Run(ctx context.Context, found func(netip.AddrPort)) (ScanResult, error) {
	rate := s.Rate
	if rate <= 0 {
		rate = DefaultScanRate
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultScanTimeout
	}
	dial := s.Dial
	if dial == nil {
		dial = func(ctx context.Context, a netip.AddrPort) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", a.String())
			if err != nil {
				return err
			}
			return c.Close()
		}
	}
	if s.Port == 0 {
		return ScanResult{}, errors.New("discovery: scan: no port")
	}
	var targets []netip.AddrPort
	seen := map[netip.Addr]bool{}
	for _, p := range s.Prefixes {
		for _, a := range Hosts(p, s.MaxBits) {
			if !seen[a] {
				seen[a] = true
				targets = append(targets, netip.AddrPortFrom(a, s.Port))
			}
		}
	}
	var (
		res  ScanResult
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, maxScanInFlight)
		tick = time.NewTicker(time.Second / time.Duration(rate))
	)
	defer tick.Stop()
	for i, t := range targets {
		if i > 0 {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		res.Probed++
		wg.Add(1)
		go func(t netip.AddrPort) {
			defer wg.Done()
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			err := dial(pctx, t)
			cancel()
			if err == nil {
				mu.Lock()
				res.Found = append(res.Found, t)
				found(t)
				mu.Unlock()
			}
		}(t)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return res, fmt.Errorf("discovery: scan stopped after %d of %d probes: %w", res.Probed, len(targets), ctx.Err())
	}
	return res, nil
}

// LocalPrefixes returns the IPv4 subnets of this host's up, non-loopback
// interfaces (with this host's address in each prefix).
func LocalPrefixes() ([]netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("discovery: interfaces: %w", err)
	}
	var out []netip.Prefix
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			ones, _ := ipn.Mask.Size()
			if ip.Is4() && !ip.IsLinkLocalUnicast() {
				out = append(out, netip.PrefixFrom(ip, ones))
			}
		}
	}
	return out, nil
}
