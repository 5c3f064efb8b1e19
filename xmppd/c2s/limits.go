package c2s

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Connection limits of a public server (storm control): a cap on the client
// connections one source address holds at once (ejabberd operators know it from
// mod_fail2ban-style setups and Prosody's mod_limit_connections), and a read
// shaper per listener (ejabberd's listener option `shaper:` naming one of its
// `shaper:` rates). Connections handed in through ServeConn (WebSocket) are not
// counted: their source is the HTTP listener's business.

// connLimits is the per-IP cap and the listener shapers.
type connLimits struct {
	mu      sync.Mutex
	max     int // 0: no cap
	exempt  []netip.Prefix
	perIP   map[string]int
	counted map[*conn]string
	warned  map[string]bool // an address refused since it last dropped below the cap
	shapers map[int]int     // index of the listener (order of Listen) -> bytes/s (0: none)
}

// SetPerIPLimit caps the connections one source IP may hold at once on this
// server's listeners (from the next accepted connection on). max 0 means no cap; addresses in exempt
// (e.g. loopback, where a local proxy or monitoring connects from) are never
// capped. A connection over the cap gets <policy-violation/> on a STARTTLS
// listener and is closed at once on a direct TLS one; one log line per address
// each time it reaches the cap.
func (s *Server) SetPerIPLimit(max int, exempt []netip.Prefix) {
	s.limits.mu.Lock()
	defer s.limits.mu.Unlock()
	s.limits.max = max
	s.limits.exempt = exempt
}

// SetListenerShaper sets the read rate in bytes/s of the connections accepted on
// the listener added with Listen(addr, directTLS) (before Start); 0 means
// unshaped. Listeners without one use Config.Shaper.
func (s *Server) SetListenerShaper(addr string, directTLS bool, rate int) error {
	for i, l := range s.lnCfg {
		if l.Addr == addr && l.DirectTLS == directTLS {
			s.limits.mu.Lock()
			defer s.limits.mu.Unlock()
			if s.limits.shapers == nil {
				s.limits.shapers = map[int]int{}
			}
			s.limits.shapers[i] = rate
			return nil
		}
	}
	return fmt.Errorf("c2s: no listener %s (direct TLS %v)", addr, directTLS)
}

// PerIP returns the connections counted for ip (for tests and the admin API).
func (s *Server) PerIP(ip string) int {
	s.limits.mu.Lock()
	defer s.limits.mu.Unlock()
	return s.limits.perIP[ip]
}

// listenerShaper returns the shaper rate configured for ln, if any.
func (s *Server) listenerShaper(ln net.Listener) (rate int, ok bool) {
	s.mu.Lock()
	idx := -1
	for i, l := range s.lns { // s.lns[i] listens for s.lnCfg[i]
		if l == ln {
			idx = i
		}
	}
	s.mu.Unlock()
	s.limits.mu.Lock()
	defer s.limits.mu.Unlock()
	rate, ok = s.limits.shapers[idx]
	return rate, ok
}

// shape re-wraps c's connection with rate (a listener's own shaper).
func (c *conn) shape(rate int) {
	c.nc = c.raw
	if c.try != nil {
		c.nc = c.try
	}
	if rate > 0 {
		c.nc = &shapedConn{Conn: c.nc, b: newBucket(rate)}
	}
}

// admit counts c against its address's cap; false: over the cap (not counted).
func (s *Server) admit(c *conn) bool {
	l := &s.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max <= 0 {
		return true
	}
	if a, err := netip.ParseAddr(c.ip); err == nil {
		a = a.Unmap()
		for _, p := range l.exempt {
			if p.Contains(a) {
				return true
			}
		}
	}
	if l.perIP == nil {
		l.perIP, l.counted, l.warned = map[string]int{}, map[*conn]string{}, map[string]bool{}
	}
	if l.perIP[c.ip] >= l.max {
		if !l.warned[c.ip] {
			l.warned[c.ip] = true
			s.log.Warn("per-IP connection cap reached: refusing further connections from this address", "ip", c.ip, "max", l.max)
		}
		return false
	}
	l.perIP[c.ip]++
	l.counted[c] = c.ip
	return true
}

// release uncounts c (its connection ended).
func (s *Server) release(c *conn) {
	l := &s.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	ip, ok := l.counted[c]
	if !ok {
		return
	}
	delete(l.counted, c)
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
	if l.perIP[ip] < l.max {
		delete(l.warned, ip)
	}
}

// refuseOverCap ends a connection over its address's cap: <policy-violation/>
// on a STARTTLS listener (a plaintext stream header costs nothing), a plain
// close on a direct TLS one (no TLS handshake spent on it).
func (c *conn) refuseOverCap(directTLS bool, max int) {
	if directTLS {
		c.closeRaw()
		return
	}
	c.sendStreamError("policy-violation", fmt.Sprintf("too many connections from your address (at most %d)", max))
}
