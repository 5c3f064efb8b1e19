package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// SRVService is the DNS SRV name under a domain that lists gossip seeds:
// _xedge-cluster._tcp.<domain> IN SRV prio weight <gossip port> <host>.
const SRVService = "_xedge-cluster._tcp."

// ParseSeeds splits a comma-separated list of host[:port] seeds; a seed without
// a port gets defPort. Blank entries are skipped; duplicates are dropped.
func ParseSeeds(list string, defPort int) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var errs []error
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			// No port: a bare host or address (IPv6 without brackets too).
			host, port = strings.Trim(s, "[]"), ""
		}
		if host == "" {
			errs = append(errs, fmt.Errorf("seed %q: no host", s))
			continue
		}
		n := defPort
		if port != "" {
			if n, err = strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				errs = append(errs, fmt.Errorf("seed %q: port must be 1-65535", s))
				continue
			}
		}
		if n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("seed %q: no port and no default port", s))
			continue
		}
		a := net.JoinHostPort(host, strconv.Itoa(n))
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, errors.Join(errs...)
}

// ParseServers reads DNS server addresses (host or host:port, default port 53).
func ParseServers(list string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if ap, err := netip.ParseAddrPort(s); err == nil {
			out = append(out, ap)
			continue
		}
		a, err := netip.ParseAddr(strings.Trim(s, "[]"))
		if err != nil {
			return nil, fmt.Errorf("dns server %q: want an IP address or ip:port", s)
		}
		out = append(out, netip.AddrPortFrom(a, 53))
	}
	return out, nil
}

// SystemServers returns the nameservers of /etc/resolv.conf (port 53).
func SystemServers() []netip.AddrPort {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
			}
		}
	}
	return out
}

// resolver returns a resolver that asks only servers (in order); nil servers
// means the system resolver.
func resolver(servers []netip.AddrPort) *net.Resolver {
	if len(servers) == 0 {
		return net.DefaultResolver
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		var last error
		for _, s := range servers {
			c, err := d.DialContext(ctx, network, s.String())
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}}
}

// LookupSRVSeeds returns the gossip seeds published as SRV records
// _xedge-cluster._tcp.<domain>, in SRV order (priority, then weight), as
// host:port with the target name's addresses resolved through the same servers.
func LookupSRVSeeds(ctx context.Context, domain string, servers []netip.AddrPort) ([]string, error) {
	domain = strings.TrimSuffix(strings.TrimSpace(domain), ".")
	if domain == "" {
		return nil, errors.New("discovery: SRV seeds: no domain")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r := resolver(servers)
	name := SRVService + domain + "."
	_, srvs, err := r.LookupSRV(ctx, "", "", name)
	if err != nil {
		return nil, fmt.Errorf("discovery: SRV seeds %s: %w", name, err)
	}
	var out []string
	for _, s := range srvs {
		target := strings.TrimSuffix(s.Target, ".")
		addrs, err := r.LookupNetIP(ctx, "ip", target)
		if err != nil || len(addrs) == 0 {
			out = append(out, net.JoinHostPort(target, strconv.Itoa(int(s.Port))))
			continue
		}
		for _, a := range addrs {
			out = append(out, netip.AddrPortFrom(a.Unmap(), s.Port).String())
		}
	}
	return out, nil
}
