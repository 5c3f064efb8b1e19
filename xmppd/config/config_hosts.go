package config

import (
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Virtual hosting, like ejabberd's hosts and host_config: one node (or cluster)
// serves every domain of hosts. domain is the default host (the server's name
// where one domain must be named: self-signed certificate, admin commands
// without a domain); when hosts is empty domain is the only host. host_config
// overrides, per host, the settings that ejabberd operators set per vhost: the
// authentication backend (every auth key of config_auth.go), the registration
// policy, the certificate and the names of the MUC and upload services.
//
//	hosts: [a.example, b.example]
//	host_config:
//	  b.example:
//	    auth_method: external
//	    extauth_program: /usr/local/bin/auth.py
//	    register: deny
//	    certfile: /etc/xmppd/b.pem
//	    keyfile: /etc/xmppd/b.key

// HostConfig is the effective configuration of one served domain: the global
// settings merged with that domain's host_config section.
type HostConfig struct {
	Domain       string
	Auth         AuthConfig // the host's authentication backend
	Register     string     // effective registration policy: allow, deny or loopback (RegisterAllow...)
	Cert, Key    string     // PEM files; empty: a self-signed certificate made for the host
	MUCDomain    string     // the host's MUC service (default conference.DOMAIN)
	UploadDomain string     // the host's upload service (default upload.DOMAIN, upload-domain for the default host)
}

// HostOverrides is the host_config setting: per domain, the keys it overrides
// (flag names, underscores written as dashes) with their values as a flag
// would take them. In the YAML file it is a map; as a flag, the same map in
// YAML flow syntax: --host-config '{b.example: {register: deny}}'.
type HostOverrides map[string]map[string]string

// String implements flag.Value.
func (h *HostOverrides) String() string {
	if h == nil || len(*h) == 0 {
		return ""
	}
	b, _ := yaml.Marshal(map[string]map[string]string(*h))
	return strings.TrimSpace(string(b))
}

// Set implements flag.Value: a YAML map of maps; a later Set adds to (and per
// key replaces) what an earlier one gave.
func (h *HostOverrides) Set(v string) error {
	var m map[string]map[string]any
	if err := yaml.Unmarshal([]byte(v), &m); err != nil {
		return fmt.Errorf("host-config: want a map of domain to settings: %w", err)
	}
	if *h == nil {
		*h = HostOverrides{}
	}
	for d, kv := range m {
		d = strings.ToLower(strings.TrimSpace(d))
		if (*h)[d] == nil {
			(*h)[d] = map[string]string{}
		}
		for k, val := range kv {
			(*h)[d][strings.ReplaceAll(k, "_", "-")] = flagValue(val)
		}
	}
	return nil
}

// flagValue prints a YAML value as a flag takes it: lists comma-separated,
// nested maps in YAML flow syntax, null as empty.
func flagValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = flagValue(e)
		}
		return strings.Join(parts, ",")
	case map[string]any:
		b, err := yaml.Marshal(x)
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
	return fmt.Sprint(v)
}

// hostKeyAliases maps ejabberd's names of host_config keys to ours.
var hostKeyAliases = map[string]string{"certfile": "cert", "keyfile": "key"}

// bindHostFlags binds the keys a host_config section may set to h.
func bindHostFlags(h *HostConfig, allowReg *bool, fs *flag.FlagSet) {
	h.Auth.bindFlags(fs)
	fs.StringVar(&h.Register, "register", h.Register, "in-band registration policy of the host: allow, deny or loopback")
	fs.BoolVar(allowReg, "allow-registration", *allowReg, "false: no in-band registration on this host")
	fs.StringVar(&h.Cert, "cert", h.Cert, "the host's certificate (PEM), chosen by SNI")
	fs.StringVar(&h.Key, "key", h.Key, "the host's private key (PEM)")
	fs.StringVar(&h.MUCDomain, "muc-domain", h.MUCDomain, "the host's MUC service")
	fs.StringVar(&h.UploadDomain, "upload-domain", h.UploadDomain, "the host's upload service")
}

// HostConfigKeys lists the keys a host_config section accepts (with dashes;
// certfile and keyfile are taken for cert and key), sorted.
func HostConfigKeys() []string {
	var h HostConfig
	var b bool
	fs := flag.NewFlagSet("host", flag.ContinueOnError)
	bindHostFlags(&h, &b, fs)
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, f.Name) })
	for k := range hostKeyAliases {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// HostNames returns the served domains: hosts, or domain alone when hosts is
// empty. The default host (domain) is always among them.
func (c *Config) HostNames() []string {
	if len(c.Hosts) == 0 {
		return []string{c.Domain}
	}
	return append([]string(nil), c.Hosts...)
}

// IsHost reports whether domain is one of the served domains.
func (c *Config) IsHost(domain string) bool {
	if len(c.Hosts) == 0 {
		return domain == c.Domain
	}
	for _, h := range c.Hosts {
		if h == domain {
			return true
		}
	}
	return false
}

// Host returns the effective settings of a served domain (global settings with
// its host_config section applied); false for a domain not served. An invalid
// section is reported by Validate; Host then returns what it could apply.
func (c *Config) Host(domain string) (HostConfig, bool) {
	if !c.IsHost(domain) {
		return HostConfig{}, false
	}
	h, _ := c.host(domain)
	return h, true
}

func (c *Config) host(domain string) (HostConfig, []error) {
	h := HostConfig{Domain: domain, Auth: c.Auth, Register: c.Register.Policy, Cert: c.Cert, Key: c.Key,
		MUCDomain: "conference." + domain, UploadDomain: "upload." + domain}
	if domain == c.Domain && c.Upload.Domain != "" {
		h.UploadDomain = c.Upload.Domain
	}
	h.Auth.LDAPServers = append(StringList(nil), c.Auth.LDAPServers...)
	h.Auth.LDAPUIDs = append(StringList(nil), c.Auth.LDAPUIDs...)
	allowReg := c.AllowRegistration
	var errs []error
	if ov := c.HostConfig[domain]; len(ov) > 0 {
		fs := flag.NewFlagSet(domain, flag.ContinueOnError)
		fs.SetOutput(discard{})
		bindHostFlags(&h, &allowReg, fs)
		keys := make([]string, 0, len(ov))
		for k := range ov {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := k
			if a, ok := hostKeyAliases[k]; ok {
				name = a
			}
			if fs.Lookup(name) == nil {
				errs = append(errs, fmt.Errorf("host-config %s: key %q cannot be set per host (it takes: %s)", domain, k, strings.Join(HostConfigKeys(), ", ")))
				continue
			}
			if err := fs.Set(name, ov[k]); err != nil {
				errs = append(errs, fmt.Errorf("host-config %s: key %q: %w", domain, k, err))
			}
		}
	}
	if !allowReg {
		h.Register = RegisterDeny
	}
	return h, errs
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// validDomain checks a host name: DNS labels of letters, digits and dashes
// (IDNs in Unicode allowed), no trailing dot, lowercase.
func validDomain(d string) error {
	if d == "" || len(d) > 253 {
		return errors.New("must be 1 to 253 characters")
	}
	if d != strings.ToLower(d) {
		return errors.New("must be lowercase")
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return fmt.Errorf("label %q: want 1 to 63 letters, digits or dashes, not starting or ending with a dash", l)
		}
		for _, r := range l {
			if r != '-' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				return fmt.Errorf("label %q: %q is not a letter, digit or dash", l, r)
			}
		}
	}
	return nil
}

// finishHosts makes domain the default host: the first of hosts when domain
// was not given.
func (c *Config) finishHosts() {
	if len(c.Hosts) > 0 && !c.domainGiven && !c.IsHost(c.Domain) {
		c.Domain = c.Hosts[0]
	}
}

func (c *Config) checkHosts() []error {
	var errs []error
	seen := map[string]bool{}
	for _, d := range c.HostNames() {
		if err := validDomain(d); err != nil {
			errs = append(errs, fmt.Errorf("host %q: %w", d, err))
		}
		if seen[d] {
			errs = append(errs, fmt.Errorf("hosts: %q is listed twice", d))
		}
		seen[d] = true
	}
	if len(c.Hosts) > 0 && !seen[c.Domain] {
		errs = append(errs, fmt.Errorf("domain %q is not in hosts (%s): the default host must be one of them", c.Domain, strings.Join(c.Hosts, ", ")))
	}
	doms := make([]string, 0, len(c.HostConfig))
	for d := range c.HostConfig {
		doms = append(doms, d)
	}
	sort.Strings(doms)
	for _, d := range doms {
		if !seen[d] {
			errs = append(errs, fmt.Errorf("host-config names %q, which is not in hosts (%s)", d, strings.Join(c.HostNames(), ", ")))
			continue
		}
		h, herrs := c.host(d)
		errs = append(errs, herrs...)
		if h.Auth.ChannelBinding != c.Auth.ChannelBinding {
			errs = append(errs, fmt.Errorf("host-config %s: sasl-channel-binding is server-wide, it cannot be set per host", d))
		}
		for _, err := range h.Auth.check() {
			errs = append(errs, fmt.Errorf("host-config %s: %w", d, err))
		}
		switch h.Register {
		case RegisterAllow, RegisterDeny, RegisterLoopback:
		default:
			errs = append(errs, fmt.Errorf("host-config %s: register %q: want allow, deny or loopback", d, h.Register))
		}
		if (h.Cert == "") != (h.Key == "") {
			errs = append(errs, fmt.Errorf("host-config %s: certfile and keyfile must be given together", d))
		}
		for _, s := range []string{h.MUCDomain, h.UploadDomain} {
			if err := validDomain(s); err != nil {
				errs = append(errs, fmt.Errorf("host-config %s: service %q: %w", d, s, err))
			}
		}
	}
	return errs
}

func init() {
	registerFeature(featureSettings{
		flags: func(c *Config, fs *flag.FlagSet) {
			fs.Var(&c.Hosts, "hosts", "comma-separated XMPP domains served (virtual hosts, ejabberd's hosts); domain is the default host and must be one of them (default: the first; empty: domain alone)")
			fs.Var(&c.HostConfig, "host-config", "per-host settings (ejabberd's host_config), a map domain -> {key: value} for the keys "+strings.Join(HostConfigKeys(), ", "))
		},
		check: func(c *Config) []error { return c.checkHosts() },
	})
}
