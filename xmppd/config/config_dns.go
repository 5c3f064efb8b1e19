package config

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// DNSConfig holds the settings of DNS publishing: the embedded authoritative server and RFC 2136 updates.
// Its flags, defaults and checks register themselves in init (registerFeature).
// docs/dns.md explains the records and the rules.
type DNSConfig struct {
	Listen       string        // dns-listen: host:port of the embedded authoritative server, UDP and TCP (empty: off)
	Zone         string        // dns-zone: the zone served or updated (default: the XMPP domain)
	TTL          time.Duration // dns-ttl: TTL of the published records and of negative answers
	NS           string        // dns-ns: comma-separated name servers of the zone (default: the healthy nodes)
	DomainAddrs  bool          // dns-domain-addrs: A/AAAA at the domain itself for clients without SRV
	S2SPort      int           // dns-s2s-port: port in _xmpp-server._tcp (0: publish "no service")
	LoadInterval time.Duration // dns-load-interval: how often connection counts feed weights and the loaded rule
	LoadFactor   float64       // dns-load-factor: loaded above this multiple of the average
	LoadMin      int           // dns-load-min: ...and at least this many connections above it
	LoadHigh     int           // dns-load-high: loaded at this many connections whatever the average (0: off)
	Update       string        // dns-update: host:port of a primary server to send RFC 2136 updates to (empty: off)
	UpdateZone   string        // dns-update-zone: zone to update (default: dns-zone)
	TSIGKeyFile  string        // dns-tsig-key-file: TSIG key file as tsig-keygen writes it (hmac-sha256)
	Resync       time.Duration // dns-update-resync: re-check the primary this often without a change
}

// Enabled reports whether DNS publishing runs at all.
func (d DNSConfig) Enabled() bool { return d.Listen != "" || d.Update != "" }

// NSList returns dns-ns split on commas, without blanks.
func (d DNSConfig) NSList() []string {
	var out []string
	for _, s := range strings.Split(d.NS, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			c.DNS = DNSConfig{TTL: 30 * time.Second, DomainAddrs: true, LoadInterval: 15 * time.Second,
				LoadFactor: 1.5, LoadMin: 50, Resync: time.Minute}
		},
		flags: func(c *Config, fs *flag.FlagSet) {
			d := &c.DNS
			fs.StringVar(&d.Listen, "dns-listen", d.Listen, "serve the cluster's DNS zone (SRV, A/AAAA, SOA, NS) on this host:port, UDP and TCP, e.g. 0.0.0.0:53 (empty: off)")
			fs.StringVar(&d.Zone, "dns-zone", d.Zone, "zone served or updated (default: the XMPP domain; must contain it)")
			fs.DurationVar(&d.TTL, "dns-ttl", d.TTL, "TTL of published records and of negative answers")
			fs.StringVar(&d.NS, "dns-ns", d.NS, "comma-separated name servers of the zone (default: every healthy node)")
			fs.BoolVar(&d.DomainAddrs, "dns-domain-addrs", d.DomainAddrs, "publish A/AAAA at the domain itself (the VIPs, else the nodes) for clients without SRV")
			fs.IntVar(&d.S2SPort, "dns-s2s-port", d.S2SPort, "port published in _xmpp-server._tcp (0: publish that there is no server-to-server service)")
			fs.DurationVar(&d.LoadInterval, "dns-load-interval", d.LoadInterval, "how often connection counts are sampled for SRV weights and the loaded rule (membership changes apply at once)")
			fs.Float64Var(&d.LoadFactor, "dns-load-factor", d.LoadFactor, "a node is loaded (its SRV priority steps back) above this multiple of the average connection count")
			fs.IntVar(&d.LoadMin, "dns-load-min", d.LoadMin, "...and only with at least this many connections above the average")
			fs.IntVar(&d.LoadHigh, "dns-load-high", d.LoadHigh, "a node with this many connections is loaded whatever the average (0: off)")
			fs.StringVar(&d.Update, "dns-update", d.Update, "host:port of a primary DNS server to keep updated with RFC 2136 (TSIG); empty: off")
			fs.StringVar(&d.UpdateZone, "dns-update-zone", d.UpdateZone, "zone to update on the primary (default: dns-zone)")
			fs.StringVar(&d.TSIGKeyFile, "dns-tsig-key-file", d.TSIGKeyFile, "TSIG key for dns-update, as `tsig-keygen -a hmac-sha256 NAME` writes it")
			fs.DurationVar(&d.Resync, "dns-update-resync", d.Resync, "re-check the primary's records this often even without a change")
		},
		check: func(c *Config) []error {
			d := c.DNS
			var errs []error
			if d.Listen != "" {
				if err := checkHostPort("dns-listen", d.Listen, true); err != nil {
					errs = append(errs, err)
				}
			}
			if d.Update != "" {
				if err := checkHostPort("dns-update", d.Update, false); err != nil {
					errs = append(errs, err)
				}
				if d.TSIGKeyFile == "" {
					errs = append(errs, errors.New("dns-update needs dns-tsig-key-file (make one with: tsig-keygen -a hmac-sha256 xedge > FILE, and give the same key to the primary)"))
				}
			}
			if d.TTL < time.Second || d.TTL > 24*time.Hour {
				errs = append(errs, fmt.Errorf("dns-ttl %v: want 1s to 24h", d.TTL))
			}
			if d.LoadFactor <= 1 || d.LoadMin < 1 || d.LoadHigh < 0 || d.LoadInterval <= 0 || d.Resync <= 0 {
				errs = append(errs, errors.New("dns-load-factor must be > 1, dns-load-min >= 1, dns-load-high >= 0, dns-load-interval and dns-update-resync positive"))
			}
			if d.S2SPort < 0 || d.S2SPort > 65535 {
				errs = append(errs, fmt.Errorf("dns-s2s-port %d: want 0-65535", d.S2SPort))
			}
			return errs
		},
	})
}
