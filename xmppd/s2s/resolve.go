package s2s

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// target is one place to connect to for a remote domain.
type target struct {
	Host      string
	Port      int
	DirectTLS bool // _xmpps-server (XEP-0368): TLS from the first byte
}

func (t target) String() string {
	s := net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	if t.DirectTLS {
		s += " (direct TLS)"
	}
	return s
}

// newResolver returns a pure-Go resolver asking server (host:port) when set, the
// system's resolver otherwise.
func newResolver(server string) *net.Resolver {
	if server == "" {
		return net.DefaultResolver
	}
	d := &net.Dialer{}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, server)
	}}
}

// errNoService is a domain whose SRV records say "." (RFC 2782: no service).
var errNoService = errors.New("the domain says it offers no XMPP server service (SRV target \".\")")

// resolve returns where to connect for domain (RFC 6120 §3.2, XEP-0368): the
// _xmpps-server._tcp and _xmpp-server._tcp SRV targets merged by priority (direct
// TLS first at equal priority), each in the resolver's weighted order; without
// SRV records, the domain itself on the default port.
func (s *Server) resolve(ctx context.Context, domain string) ([]target, error) {
	type rec struct {
		t    target
		prio uint16
	}
	var recs []rec
	noService := false
	for _, svc := range []struct {
		name   string
		direct bool
	}{{"xmpps-server", true}, {"xmpp-server", false}} {
		// An error (no such record, or a failed lookup) leaves the other service
		// and the address fallback to try; a failed connect reports the cause.
		_, srvs, err := s.res.LookupSRV(ctx, svc.name, "tcp", domain)
		if err != nil && !isNotFound(err) {
			s.log.Debug("s2s SRV lookup failed", "domain", domain, "service", svc.name, "err", err)
		}
		for _, r := range srvs {
			host := strings.TrimSuffix(r.Target, ".")
			if host == "" {
				noService = true
				continue
			}
			recs = append(recs, rec{target{Host: host, Port: int(r.Port), DirectTLS: svc.direct}, r.Priority})
		}
	}
	if len(recs) == 0 {
		if noService {
			return nil, errNoService
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return []target{{Host: domain, Port: s.cfg.DefaultPort}}, nil
	}
	// Stable merge by priority: each service list is already in the resolver's
	// order (priority, then weighted random).
	out := make([]target, 0, len(recs))
	for len(recs) > 0 {
		best := 0
		for i, r := range recs {
			if r.prio < recs[best].prio {
				best = i
			}
		}
		out = append(out, recs[best].t)
		recs = append(recs[:best], recs[best+1:]...)
	}
	return out, nil
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// lookupAddrs returns the addresses of host (IPv6 and IPv4 as the resolver
// returns them); an IP literal is returned as is.
func (s *Server) lookupAddrs(ctx context.Context, host string) ([]string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []string{ip.String()}, nil
	}
	ips, err := s.res.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.IP.String())
	}
	return out, nil
}
