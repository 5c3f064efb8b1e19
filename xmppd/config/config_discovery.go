package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DiscoveryConfig holds the settings of peer discovery and auto-join: Serf membership, subnet scan, reverse DNS, static and DNS SRV seeds.
// Its flags, defaults and checks register themselves in init (registerFeature).
type DiscoveryConfig struct {
	Discover        string        // "auto", "none" or a comma list of serf, scan, dns
	Seeds           string        // gossip seeds host[:port] (port default: this node's gossip port)
	GossipAddr      string        // gossip bind host:port (default: cluster-addr's host, cluster port + 1)
	GossipAdvertise string        // gossip address peers dial (default: advertise-addr's host, gossip port)
	Domain          string        // DNS SRV seeds: _xedge-cluster._tcp.<domain>
	DNSServers      string        // DNS servers for SRV and reverse lookups (default /etc/resolv.conf)
	ReverseDNS      bool          // name members by PTR
	ScanRate        int           // probes per second
	ScanMaxPrefix   int           // widest subnet scanned, in prefix bits (22 = /22)
	Window          time.Duration // discovery window before anyone bootstraps
	BootstrapExpect int           // bootstrap only once this many nodes are seen (0: no minimum)
	ProbeInterval   time.Duration // gossip failure-detection tuning (0: ~1 s detection defaults)
	SuspicionMult   int
}

// DiscoverySources says which discovery parts run (the discover setting
// resolved against the cluster settings).
type DiscoverySources struct {
	Serf, Scan, DNS bool
	// AutoJoin: discovery chooses the join seeds (or bootstrap) before the
	// store starts: on when join is empty and some source can find peers.
	AutoJoin bool
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			c.Discovery = DiscoveryConfig{Discover: "auto", ReverseDNS: true, ScanRate: 100, ScanMaxPrefix: 22, Window: 5 * time.Second}
		},
		flags: func(c *Config, fs *flag.FlagSet) {
			d := &c.Discovery
			fs.StringVar(&d.Discover, "discover", d.Discover, "peer discovery: auto, none, or any of serf,scan,dns (auto: serf when clustered off loopback or with seeds; scan too when join and seeds are empty; dns when discover-domain is set)")
			fs.StringVar(&d.Seeds, "seeds", d.Seeds, "comma-separated gossip seeds host[:port] (default port: this node's gossip port); join seeds also count, at their cluster port + 1")
			fs.StringVar(&d.GossipAddr, "gossip-addr", d.GossipAddr, "gossip (Serf) listener host:port, TCP and UDP (default: cluster-addr's host, cluster port + 1)")
			fs.StringVar(&d.GossipAdvertise, "gossip-advertise", d.GossipAdvertise, "gossip address peers dial (default: advertise-addr's host with the gossip port)")
			fs.StringVar(&d.Domain, "discover-domain", d.Domain, "DNS domain whose SRV records _xedge-cluster._tcp.<domain> list gossip seeds")
			fs.StringVar(&d.DNSServers, "dns-servers", d.DNSServers, "comma-separated DNS servers ip[:port] for SRV seeds and reverse DNS (default: /etc/resolv.conf)")
			fs.BoolVar(&d.ReverseDNS, "reverse-dns", d.ReverseDNS, "name members found off loopback by their PTR records")
			fs.IntVar(&d.ScanRate, "scan-rate", d.ScanRate, "subnet scan: connection probes per second")
			fs.IntVar(&d.ScanMaxPrefix, "scan-max-prefix", d.ScanMaxPrefix, "subnet scan: widest subnet scanned in prefix bits; a wider subnet is cut to the /N around this node")
			fs.DurationVar(&d.Window, "discover-window", d.Window, "how long discovery looks for peers (and the first scan pass must end) before a node without a cluster bootstraps one")
			fs.IntVar(&d.BootstrapExpect, "bootstrap-expect", d.BootstrapExpect, "bootstrap a new cluster only once this many nodes are seen (0: no minimum)")
			fs.DurationVar(&d.ProbeInterval, "gossip-probe-interval", d.ProbeInterval, "gossip failure detection: probe interval (0: 200ms, ~1 s detection)")
			fs.IntVar(&d.SuspicionMult, "gossip-suspicion-mult", d.SuspicionMult, "gossip failure detection: suspicion lasts this many probe intervals (0: 3)")
		},
		check: func(c *Config) []error { return c.checkDiscovery() },
	})
}

// DiscoverySources resolves the discover setting.
func (c *Config) DiscoverySources() DiscoverySources {
	var s DiscoverySources
	if !c.Clustered() {
		return s
	}
	d := c.Discovery
	switch strings.TrimSpace(d.Discover) {
	case "none", "off":
		return s
	case "auto", "":
		loop := loopbackHost(c.ClusterAddr)
		s.Serf = !loop || d.Seeds != "" || d.Domain != ""
		s.Scan = !loop && c.Join == "" && d.Seeds == "" && d.Domain == ""
		s.DNS = d.Domain != ""
	default:
		for _, p := range strings.Split(d.Discover, ",") {
			switch strings.TrimSpace(p) {
			case "serf":
				s.Serf = true
			case "scan":
				s.Scan, s.Serf = true, true
			case "dns":
				s.DNS, s.Serf = true, true
			}
		}
	}
	s.AutoJoin = s.Serf && c.Join == "" && (s.Scan || (s.DNS && d.Domain != "") || d.Seeds != "")
	return s
}

// GossipAddrs returns the gossip bind and advertise addresses.
func (c *Config) GossipAddrs() (bind, advertise netip.AddrPort, err error) {
	d := c.Discovery
	if d.GossipAddr != "" {
		bind, err = netip.ParseAddrPort(d.GossipAddr)
		if err != nil {
			return bind, advertise, fmt.Errorf("gossip-addr %q: want ip:port: %w", d.GossipAddr, err)
		}
	} else {
		host, port, err := splitIPPort(c.ClusterAddr)
		if err != nil {
			return bind, advertise, fmt.Errorf("cluster-addr %q: %w", c.ClusterAddr, err)
		}
		if port >= 65535 {
			return bind, advertise, fmt.Errorf("cluster-addr %q: no port above it for gossip: set gossip-addr", c.ClusterAddr)
		}
		bind = netip.AddrPortFrom(host, uint16(port+1))
	}
	advertise = bind
	switch {
	case d.GossipAdvertise != "":
		if advertise, err = netip.ParseAddrPort(d.GossipAdvertise); err != nil {
			return bind, advertise, fmt.Errorf("gossip-advertise %q: want ip:port: %w", d.GossipAdvertise, err)
		}
	case c.AdvertiseAddr != "":
		host, _, err := splitIPPort(c.AdvertiseAddr)
		if err != nil {
			return bind, advertise, fmt.Errorf("advertise-addr %q: the gossip address needs an IP (or set gossip-advertise): %w", c.AdvertiseAddr, err)
		}
		advertise = netip.AddrPortFrom(host, bind.Port())
	}
	if advertise.Addr().IsUnspecified() {
		return bind, advertise, fmt.Errorf("gossip address %s listens on every address: set gossip-advertise (or advertise-addr) to the address peers dial", advertise)
	}
	return bind, advertise, nil
}

// GossipSeeds returns the static gossip seeds: seeds (default port: this
// node's gossip port) and, for each join seed, its host at cluster port + 1.
func (c *Config) GossipSeeds() []string {
	_, adv, err := c.GossipAddrs()
	def := 0
	if err == nil {
		def = int(adv.Port())
	}
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, s := range strings.Split(c.Discovery.Seeds, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(s); err != nil && def > 0 {
			s = net.JoinHostPort(strings.Trim(s, "[]"), strconv.Itoa(def))
		}
		add(s)
	}
	for _, j := range c.JoinList() {
		host, port, err := net.SplitHostPort(j)
		if n, perr := strconv.Atoi(port); err == nil && perr == nil && n < 65535 {
			add(net.JoinHostPort(host, strconv.Itoa(n+1)))
		}
	}
	return out
}

func (c *Config) checkDiscovery() []error {
	var errs []error
	d := c.Discovery
	switch strings.TrimSpace(d.Discover) {
	case "auto", "", "none", "off":
	default:
		for _, p := range strings.Split(d.Discover, ",") {
			switch strings.TrimSpace(p) {
			case "serf", "scan", "dns":
			default:
				errs = append(errs, fmt.Errorf("discover %q: want auto, none, or a comma list of serf, scan, dns", d.Discover))
			}
		}
	}
	if d.ScanRate < 1 || d.ScanRate > 10000 {
		errs = append(errs, errors.New("scan-rate must be 1-10000 probes per second"))
	}
	if d.ScanMaxPrefix < 16 || d.ScanMaxPrefix > 32 {
		errs = append(errs, errors.New("scan-max-prefix must be 16-32 (at most a /16 is ever scanned)"))
	}
	if d.Window < 0 || d.BootstrapExpect < 0 || d.ProbeInterval < 0 || d.SuspicionMult < 0 {
		errs = append(errs, errors.New("discover-window, bootstrap-expect, gossip-probe-interval and gossip-suspicion-mult must not be negative"))
	}
	for _, s := range strings.Split(d.DNSServers, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(s); err != nil {
			if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err != nil {
				errs = append(errs, fmt.Errorf("dns-servers: %q is not an IP address or ip:port", s))
			}
		}
	}
	for _, s := range strings.Split(d.Seeds, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(s); err == nil {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				errs = append(errs, fmt.Errorf("seeds: %q: port must be 1-65535", s))
			}
		}
	}
	if !c.Clustered() {
		if d.Seeds != "" || d.Domain != "" || (d.Discover != "auto" && d.Discover != "" && d.Discover != "none" && d.Discover != "off") {
			errs = append(errs, errors.New("discover, seeds or discover-domain set without cluster-addr: discovery finds cluster peers (set cluster-addr)"))
		}
		return errs
	}
	if c.DiscoverySources().Serf {
		if _, _, err := c.GossipAddrs(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// splitIPPort splits an ip:port (a host name is refused: gossip binds an IP).
func splitIPPort(hp string) (netip.Addr, int, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("host %q is not an IP address", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("port %q: %w", port, err)
	}
	return ip, n, nil
}

// loopbackHost reports whether hostport's host is a loopback address or name.
func loopbackHost(hp string) bool {
	host, _, err := net.SplitHostPort(hp)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
