package config

import (
	"flag"
	"fmt"
	"net"
	"strings"
)

// OpsConfig holds the settings of operations: the HTTP listener, Prometheus metrics, the web admin page.
// Its flags, defaults and checks register themselves in init (registerFeature).
type OpsConfig struct {
	// HTTP is the node's HTTP listener (host:port; empty: off). It serves
	// /metrics and the web admin page under /admin/, and is where later
	// HTTP features (WebSocket, upload) mount their handlers.
	HTTP string
	// HTTPTLS serves the HTTP listener over TLS with the node's certificate
	// (false: plain HTTP, e.g. behind a TLS-terminating proxy on loopback).
	HTTPTLS bool
	// Metrics is an extra plain-HTTP listener serving only /metrics (empty: off),
	// for a Prometheus on a trusted network.
	Metrics string
	// Admins lists the accounts (user names or bare JIDs of the served domain)
	// allowed into the web admin page (HTTP basic authentication against
	// xmppd's accounts). Empty: the web admin page refuses everyone.
	Admins string
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) { c.Ops = OpsConfig{HTTPTLS: true} },
		flags: func(c *Config, fs *flag.FlagSet) {
			fs.StringVar(&c.Ops.HTTP, "http", c.Ops.HTTP, "HTTP listener host:port for /metrics and the web admin page /admin/ (empty: off)")
			fs.BoolVar(&c.Ops.HTTPTLS, "http-tls", c.Ops.HTTPTLS, "serve the http listener over TLS with the node's certificate (false: plain HTTP; the web admin page then only accepts loopback clients)")
			fs.StringVar(&c.Ops.Metrics, "metrics", c.Ops.Metrics, "extra plain-HTTP listener host:port serving only /metrics (empty: off)")
			fs.StringVar(&c.Ops.Admins, "admins", c.Ops.Admins, "comma-separated accounts (user or user@domain) allowed into the web admin page")
		},
		check: func(c *Config) []error {
			var errs []error
			for name, a := range map[string]string{"http": c.Ops.HTTP, "metrics": c.Ops.Metrics} {
				if a == "" {
					continue
				}
				if _, _, err := net.SplitHostPort(a); err != nil {
					errs = append(errs, fmt.Errorf("%s %q: want host:port: %w", name, a, err))
				}
			}
			if c.Ops.HTTP != "" && c.Ops.HTTP == c.Ops.Metrics {
				errs = append(errs, fmt.Errorf("http and metrics are both %s: give metrics its own address or leave it empty (/metrics is on the http listener too)", c.Ops.HTTP))
			}
			for _, u := range c.AdminList() {
				if local, dom, ok := strings.Cut(u, "@"); local == "" || (ok && dom != c.Domain) {
					errs = append(errs, fmt.Errorf("admins: %q is not an account of domain %s", u, c.Domain))
				}
			}
			return errs
		},
	})
}

// AdminList returns the admins setting split on commas, without blanks.
func (c *Config) AdminList() []string {
	var out []string
	for _, a := range strings.Split(c.Ops.Admins, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}
