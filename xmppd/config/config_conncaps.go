package config

import (
	"flag"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// ConnCapsConfig holds the connection-level storm control of the client
// listeners: a cap on the connections one source address holds at once, and
// named read shapers chosen per listener, as ejabberd's `shaper:` section and
// listener option `shaper: NAME` (docs/xmppd.md). Its flags, defaults and checks
// register themselves in init.
type ConnCapsConfig struct {
	MaxPerIP int    // max-connections-per-ip: connections one source IP may hold (0: no cap)
	Exempt   string // max-connections-per-ip-exempt: comma-separated prefixes never capped
	Shapers  string // shapers: NAME=BYTES_PER_SECOND,... (a YAML map works too)
	C2S      string // c2s-listener-shaper: shaper NAME (or none) of the c2s listener; empty: c2s-shaper
	C2STLS   string // c2s-tls-listener-shaper: the same for the direct TLS listener
}

// ExemptPrefixes returns the parsed exempt prefixes (a bare address is a /32 or /128).
func (l ConnCapsConfig) ExemptPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(l.Exempt, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("max-connections-per-ip-exempt %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("max-connections-per-ip-exempt %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ShaperRates returns the named shapers. It reads "name=rate,..." and the form
// a YAML map takes through the flag ("map[name:rate ...]").
func (l ConnCapsConfig) ShaperRates() (map[string]int, error) {
	s := strings.TrimSpace(l.Shapers)
	sep := "="
	if strings.HasPrefix(s, "map[") && strings.HasSuffix(s, "]") {
		s, sep = strings.ReplaceAll(s[4:len(s)-1], " ", ","), ":"
	}
	out := map[string]int{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		name, v, ok := strings.Cut(kv, sep)
		name = strings.TrimSpace(name)
		rate, err := strconv.Atoi(strings.TrimSpace(v))
		if !ok || name == "" || err != nil || rate < 0 {
			return nil, fmt.Errorf("shapers: %q: want NAME=BYTES_PER_SECOND (>= 0)", kv)
		}
		if name == "none" {
			return nil, fmt.Errorf("shapers: %q: none is reserved (no shaping)", kv)
		}
		out[name] = rate
	}
	return out, nil
}

// ListenerRate resolves a listener's shaper name: ok false means the listener
// has none of its own (c2s-shaper applies); "none" is unshaped (rate 0).
func (l ConnCapsConfig) ListenerRate(name string) (rate int, ok bool, err error) {
	if name == "" {
		return 0, false, nil
	}
	if name == "none" {
		return 0, true, nil
	}
	rates, err := l.ShaperRates()
	if err != nil {
		return 0, false, err
	}
	r, found := rates[name]
	if !found {
		names := make([]string, 0, len(rates))
		for n := range rates {
			names = append(names, n)
		}
		sort.Strings(names)
		return 0, false, fmt.Errorf("shaper %q is not defined in shapers (defined: %s; or none)", name, strings.Join(names, ", "))
	}
	return r, true, nil
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			// 32 connections per address: far above what one person's devices
			// hold, low enough that one host cannot take thousands of sockets.
			// Loopback is exempt: a local proxy or monitoring connects from it.
			c.ConnCaps = ConnCapsConfig{MaxPerIP: 32, Exempt: "127.0.0.0/8,::1",
				Shapers: "normal=1048576,fast=10485760"}
		},
		flags: func(c *Config, fs *flag.FlagSet) {
			l := &c.ConnCaps
			fs.IntVar(&l.MaxPerIP, "max-connections-per-ip", l.MaxPerIP, "client connections one source IP may hold at once; the next gets <policy-violation/> (0: no cap)")
			fs.StringVar(&l.Exempt, "max-connections-per-ip-exempt", l.Exempt, "comma-separated addresses or prefixes never capped (e.g. a reverse proxy)")
			fs.StringVar(&l.Shapers, "shapers", l.Shapers, "named read shapers, NAME=BYTES_PER_SECOND,... (ejabberd's shaper: section; a YAML map works)")
			fs.StringVar(&l.C2S, "c2s-listener-shaper", l.C2S, "shaper NAME (from shapers) or none for the c2s listener (empty: c2s-shaper)")
			fs.StringVar(&l.C2STLS, "c2s-tls-listener-shaper", l.C2STLS, "shaper NAME (from shapers) or none for the c2s-tls listener (empty: c2s-shaper)")
		},
		check: func(c *Config) []error {
			l := c.ConnCaps
			var errs []error
			if l.MaxPerIP < 0 {
				errs = append(errs, fmt.Errorf("max-connections-per-ip must be >= 0"))
			}
			if _, err := l.ExemptPrefixes(); err != nil {
				errs = append(errs, err)
			}
			if _, err := l.ShaperRates(); err != nil {
				errs = append(errs, err)
			}
			for flagName, name := range map[string]string{"c2s-listener-shaper": l.C2S, "c2s-tls-listener-shaper": l.C2STLS} {
				if _, _, err := l.ListenerRate(name); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", flagName, err))
				}
			}
			return errs
		},
	})
}
