package netcfg

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ReverseName looks up the PTR name of addr through the given DNS servers (port 53),
// returning the first name without its trailing dot. ctx bounds the whole lookup.
func ReverseName(ctx context.Context, addr netip.Addr, servers []netip.Addr) (string, error) {
	ports := make([]netip.AddrPort, len(servers))
	for i, s := range servers {
		ports[i] = netip.AddrPortFrom(s, 53)
	}
	return reverseName(ctx, addr, ports)
}

func reverseName(ctx context.Context, addr netip.Addr, servers []netip.AddrPort) (string, error) {
	if len(servers) == 0 {
		return "", fmt.Errorf("reverse lookup of %s: no DNS servers", addr)
	}
	var lastErr error
	for _, s := range servers {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, s.String())
		}}
		names, err := r.LookupAddr(ctx, addr.String())
		if err == nil && len(names) > 0 {
			return strings.TrimSuffix(names[0], "."), nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return "", fmt.Errorf("reverse lookup of %s: %w", addr, lastErr)
}
