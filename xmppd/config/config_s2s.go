package config

import (
	"errors"
	"flag"
	"time"
)

// S2SConfig holds the settings of server-to-server federation (docs/s2s.md). Its
// flags, defaults and checks register themselves in init.
type S2SConfig struct {
	Listen         string        // s2s: host:port of the server-to-server listener; federation is on when set (empty: off)
	Resolver       string        // s2s-resolver: host:port of the DNS server for SRV/A lookups (empty: the system's)
	CAFile         string        // s2s-ca-file: PEM roots for peers' certificates (empty: the system's roots)
	SecureAuth     bool          // s2s-secure-auth: peers' certificates must verify (no dialback)
	AllowPlaintext bool          // s2s-allow-plaintext: federate without TLS with peers that offer none
	Bidi           bool          // s2s-bidi: bidirectional streams (XEP-0288), offered and used
	Timeout        time.Duration // s2s-timeout: resolve + connect + authenticate a link
	IdleTimeout    time.Duration // s2s-idle-timeout: close an outgoing link without traffic
	Queue          int           // s2s-queue: stanzas queued per remote domain while its link is made
	DefaultPort    int           // s2s-default-port: port tried when a domain has no SRV record
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			c.S2S = S2SConfig{Bidi: true, Timeout: 30 * time.Second, IdleTimeout: 10 * time.Minute, Queue: 1000, DefaultPort: 5269}
		},
		flags: func(c *Config, fs *flag.FlagSet) {
			k := &c.S2S
			fs.StringVar(&k.Listen, "s2s", k.Listen, "server-to-server listener, e.g. 0.0.0.0:5269 (ejabberd's ejabberd_s2s_in); federation is off when empty")
			fs.StringVar(&k.Resolver, "s2s-resolver", k.Resolver, "DNS server (host:port) asked for _xmpps-server/_xmpp-server SRV and address records (empty: the system's resolver)")
			fs.StringVar(&k.CAFile, "s2s-ca-file", k.CAFile, "PEM file of the roots peers' certificates are verified against (empty: the system's roots)")
			fs.BoolVar(&k.SecureAuth, "s2s-secure-auth", k.SecureAuth, "refuse peers whose certificate does not verify: SASL EXTERNAL only, no dialback (Prosody's s2s_secure_auth)")
			fs.BoolVar(&k.AllowPlaintext, "s2s-allow-plaintext", k.AllowPlaintext, "federate without TLS with peers that offer no STARTTLS (default: such peers are unreachable)")
			fs.BoolVar(&k.Bidi, "s2s-bidi", k.Bidi, "bidirectional server-to-server streams (XEP-0288): offered on the listener and used with peers that offer them")
			fs.DurationVar(&k.Timeout, "s2s-timeout", k.Timeout, "time to resolve, connect and authenticate a link; stanzas queued meanwhile are bounced with remote-server-timeout after it")
			fs.DurationVar(&k.IdleTimeout, "s2s-idle-timeout", k.IdleTimeout, "close an outgoing link after this long without a stanza")
			fs.IntVar(&k.Queue, "s2s-queue", k.Queue, "stanzas queued per remote domain while its link is made (more are bounced with resource-constraint)")
			fs.IntVar(&k.DefaultPort, "s2s-default-port", k.DefaultPort, "port tried on a domain's addresses when it has no SRV record")
		},
		check: func(c *Config) []error {
			var errs []error
			k := c.S2S
			if k.Listen != "" {
				if err := checkHostPort("s2s", k.Listen, true); err != nil {
					errs = append(errs, err)
				}
			}
			if k.Resolver != "" {
				if err := checkHostPort("s2s-resolver", k.Resolver, false); err != nil {
					errs = append(errs, err)
				}
			}
			if k.Timeout <= 0 || k.IdleTimeout <= 0 || k.Queue <= 0 || k.DefaultPort <= 0 || k.DefaultPort > 65535 {
				errs = append(errs, errors.New("s2s-timeout, s2s-idle-timeout, s2s-queue and s2s-default-port must be positive"))
			}
			return errs
		},
	})
}
