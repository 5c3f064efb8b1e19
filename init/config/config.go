// Package config assembles the node's configuration from layers — embedded image
// defaults, DHCP options, the kernel command line — and says, when it is incomplete,
// why the node must stay in maintenance.
//
// It is pure logic on strings: it must not import netcfg, the supervisor or xmppd, and
// it performs no I/O.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Prefix is the namespace of xedge's kernel command line parameters.
const Prefix = "xedge."

// Known parameter keys (without Prefix). Each is documented in docs/image.md.
const (
	KeyDomain       = "domain"       // XMPP domain served
	KeyClusterKey   = "key"          // cluster key (Serf keyring and inter-node auth)
	KeySeeds        = "seeds"        // comma-separated host[:port] of peers to join
	KeyStorage      = "storage"      // storage target, e.g. iscsi://10.0.0.9/iqn.2026-01.org.example:lun0
	KeyConfigURL    = "config"       // http(s) URL of an xmppd YAML config
	KeyHostname     = "hostname"     // hostname override
	KeyRestarts     = "restarts"     // heart limit "N/DURATION", e.g. 3/30m
	KeyRegistration = "registration" // allow in-band registration (1/0)
	KeyLogLevel     = "loglevel"     // xmppd log level
	KeyDebug        = "debug"        // enable test-only console commands (1/0)
	KeyDHCPTimeout  = "dhcp_timeout" // how long to wait for the first lease
	// KeyBoot is the boot server's URL; the PXE boot script sets it, and init
	// fetches the box's parameters (key, seeds, domain...) from <URL>params.
	KeyBoot = "boot"
	// KeyPXE makes a running node a PXE server too (on, proxy: ProxyDHCP beside the
	// segment's DHCP server; off).
	KeyPXE = "pxe"
)

var known = map[string]bool{
	KeyDomain: true, KeyClusterKey: true, KeySeeds: true, KeyStorage: true, KeyConfigURL: true,
	KeyHostname: true, KeyRestarts: true, KeyRegistration: true, KeyLogLevel: true,
	KeyDebug: true, KeyDHCPTimeout: true, KeyBoot: true, KeyPXE: true,
}

// Layer is one source of parameters, keyed without Prefix.
type Layer struct {
	Source string // "default", "image", "dhcp", "cmdline"
	Values map[string]string
	// Warnings are things in this layer that were ignored (unknown keys, syntax).
	Warnings []string
}

// Builtin is the layer compiled into init: what a node uses when nothing says otherwise.
func Builtin() Layer {
	return Layer{Source: "default", Values: map[string]string{
		KeyRestarts:     "3/30m",
		KeyRegistration: "0",
		KeyLogLevel:     "info",
		KeyDebug:        "0",
		KeyDHCPTimeout:  "10s",
	}}
}

// ParseParams reads parameters in kernel command line syntax: whitespace-separated
// words, double quotes group words, only words starting with "xedge." are taken.
// A bare "xedge.flag" means "xedge.flag=1". Newlines count as whitespace, so an image
// defaults file may hold one parameter per line; lines starting with # are comments.
func ParseParams(source, text string) Layer {
	l := Layer{Source: source, Values: map[string]string{}}
	for _, w := range splitWords(stripComments(text)) {
		if !strings.HasPrefix(w, Prefix) {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(w, Prefix), "=")
		if !ok {
			v = "1"
		}
		if !known[k] {
			l.Warnings = append(l.Warnings, fmt.Sprintf("%s: unknown parameter %s%s ignored", source, Prefix, k))
			continue
		}
		l.Values[k] = v
	}
	return l
}

func stripComments(text string) string {
	lines := strings.Split(text, "\n")
	for i, ln := range lines {
		if strings.HasPrefix(strings.TrimSpace(ln), "#") {
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n")
}

// splitWords splits on whitespace, honouring double quotes (which are removed).
func splitWords(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// FromDHCP builds the DHCP layer: the site-private option (xedge parameters as text)
// wins; the standard domain-name option (15) is used as the XMPP domain only when the
// private option does not name one.
func FromDHCP(xedgeOption, domainName string) Layer {
	l := ParseParams("dhcp", xedgeOption)
	if _, ok := l.Values[KeyDomain]; !ok && domainName != "" {
		l.Values[KeyDomain] = domainName
	}
	return l
}

// Config is the merged, validated configuration.
type Config struct {
	Domain        string
	ClusterKey    string
	Seeds         []string
	Storage       string
	ConfigURL     string
	Hostname      string
	MaxRestarts   int
	RestartWindow time.Duration
	Registration  bool
	LogLevel      string
	Debug         bool
	DHCPTimeout   time.Duration
	// Boot is the URL of the server the box booted from ("" when booted otherwise).
	Boot string
	// PXE is "" (off) or "proxy": the node serves network boots itself.
	PXE string

	// Source says which layer each key came from.
	Source map[string]string
	// Problems are reasons the node cannot serve: it stays in maintenance while any exist.
	Problems []string
	// Quarantine are reasons the node must not take part in the cluster at all (no
	// or a wrong cluster key where one is required): it starts nothing, joins
	// nothing, holds no VIP, and says why on its console.
	Quarantine []string
	// Warnings are things ignored or defaulted that an operator should know.
	Warnings []string
}

// Merge applies layers in order (later wins) and validates the result.
func Merge(layers ...Layer) Config {
	vals := map[string]string{}
	c := Config{Source: map[string]string{}}
	for _, l := range layers {
		for k, v := range l.Values {
			vals[k] = v
			c.Source[k] = l.Source
		}
		c.Warnings = append(c.Warnings, l.Warnings...)
	}
	bad := func(k, want string) {
		c.Problems = append(c.Problems, fmt.Sprintf("%s%s=%q (from %s): want %s", Prefix, k, vals[k], c.Source[k], want))
	}
	c.Domain = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(vals[KeyDomain]), "."))
	c.ClusterKey = vals[KeyClusterKey]
	c.Storage = vals[KeyStorage]
	c.ConfigURL = vals[KeyConfigURL]
	c.Hostname = vals[KeyHostname]
	c.LogLevel = vals[KeyLogLevel]
	for _, s := range strings.Split(vals[KeySeeds], ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Seeds = append(c.Seeds, s)
		}
	}
	var ok bool
	if c.Registration, ok = parseBool(vals[KeyRegistration]); !ok {
		bad(KeyRegistration, "0 or 1")
	}
	if c.Debug, ok = parseBool(vals[KeyDebug]); !ok {
		bad(KeyDebug, "0 or 1")
	}
	if n, w, err := ParseRestarts(vals[KeyRestarts]); err != nil {
		bad(KeyRestarts, "N/DURATION such as 3/30m")
	} else {
		c.MaxRestarts, c.RestartWindow = n, w
	}
	if d, err := time.ParseDuration(vals[KeyDHCPTimeout]); err != nil || d <= 0 {
		bad(KeyDHCPTimeout, "a positive duration such as 10s")
	} else {
		c.DHCPTimeout = d
	}
	switch {
	case c.Domain == "":
		c.Problems = append(c.Problems, "no XMPP domain: set xedge.domain= on the kernel command line, in DHCP option 224 (or 15), or build the image with `xedge image --domain`")
	case !validDomain(c.Domain):
		bad(KeyDomain, "a DNS name")
	}
	c.Boot = vals[KeyBoot]
	switch strings.ToLower(vals[KeyPXE]) {
	case "", "0", "off", "no", "false":
	case "1", "on", "yes", "true", "proxy":
		c.PXE = "proxy"
	default:
		bad(KeyPXE, "on (ProxyDHCP beside the segment's DHCP server) or off")
	}
	if c.Boot != "" && !strings.HasPrefix(c.Boot, "http://") && !strings.HasPrefix(c.Boot, "https://") {
		bad(KeyBoot, "an http:// or https:// URL")
	}
	switch {
	case c.ClusterKey == "" && len(c.Seeds) > 0:
		c.Quarantine = append(c.Quarantine, fmt.Sprintf("no cluster key: xedge.seeds (from %s) names a cluster to join, but no xedge.key was given", c.Source[KeySeeds]))
	case c.ClusterKey == "" && c.Boot != "":
		c.Quarantine = append(c.Quarantine, fmt.Sprintf("no cluster key: the boot server %s gave none (set its cluster key: xedge pxe --key-file)", c.Boot))
	}
	if c.ClusterKey != "" && len(c.ClusterKey) < 16 {
		c.Problems = append(c.Problems, fmt.Sprintf("xedge.key (from %s) is %d bytes: the cluster key must be at least 16", c.Source[KeyClusterKey], len(c.ClusterKey)))
	}
	if c.ClusterKey == "" && len(c.Problems) == 0 && len(c.Quarantine) == 0 {
		c.Warnings = append(c.Warnings, "no cluster key (xedge.key=): running as a standalone node")
	}
	if c.ConfigURL != "" && !strings.HasPrefix(c.ConfigURL, "http://") && !strings.HasPrefix(c.ConfigURL, "https://") {
		bad(KeyConfigURL, "an http:// or https:// URL")
	}
	if c.Hostname != "" && !validDomain(c.Hostname) {
		bad(KeyHostname, "a host name")
	}
	sort.Strings(c.Warnings)
	return c
}

// Maintenance reports whether the node must not start xmppd: it stays in
// maintenance (Problems) or quarantine (Quarantine).
func (c Config) Maintenance() bool { return len(c.Problems) > 0 || len(c.Quarantine) > 0 }

// Quarantined reports whether the node is kept out of the cluster.
func (c Config) Quarantined() bool { return len(c.Quarantine) > 0 }

// WrongKey recognises xmppd's report that the cluster refused this node's key when
// it tried to join (a line of its log or its exit message), and returns the reason
// to show; "" if the line is something else — in particular a member's own log of
// a refused intruder ("refused cluster connection"), which is not about this node.
func WrongKey(line string) string {
	l := strings.ToLower(line)
	if strings.Contains(l, "refused cluster connection") {
		return ""
	}
	joining := strings.Contains(l, "join") || strings.Contains(l, "seed")
	// Only a definite refusal counts: the peer's certificate is not this cluster's,
	// or the peer rejected ours. A handshake cut short (reset, timeout: a busy host)
	// is also reported as "wrong cluster key?" and must not quarantine a good box.
	definite := strings.Contains(l, "wrong cluster key:") || strings.Contains(l, "cannot be decrypted") ||
		strings.Contains(l, "not a member of this cluster") || strings.Contains(l, "bad certificate") ||
		strings.Contains(l, "cluster key mismatch")
	if joining && definite {
		return "wrong cluster key: the cluster refused this box's key (" + logMessage(line) + ")"
	}
	return ""
}

// ParseRestarts parses "N/DURATION" (e.g. "3/30m").
func ParseRestarts(s string) (int, time.Duration, error) {
	ns, ds, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("restarts %q: want N/DURATION", s)
	}
	n, err := strconv.Atoi(ns)
	if err != nil || n < 0 {
		return 0, 0, fmt.Errorf("restarts %q: bad count", s)
	}
	d, err := time.ParseDuration(ds)
	if err != nil || d <= 0 {
		return 0, 0, fmt.Errorf("restarts %q: bad duration", s)
	}
	return n, d, nil
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "", "0", "false", "no", "off":
		return false, true
	case "1", "true", "yes", "on":
		return true, true
	}
	return false, false
}

func validDomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

// logMessage is the msg (and err) of a slog text line, or the line itself.
func logMessage(line string) string {
	field := func(k string) string {
		i := strings.Index(line, " "+k+"=")
		if i < 0 {
			return ""
		}
		v := line[i+len(k)+2:]
		if strings.HasPrefix(v, `"`) {
			if j := strings.Index(v[1:], `"`); j >= 0 {
				return v[1 : j+1]
			}
			return v[1:]
		}
		v, _, _ = strings.Cut(v, " ")
		return v
	}
	msg, err := field("msg"), field("err")
	switch {
	case msg != "" && err != "":
		return msg + ": " + err
	case msg != "":
		return msg
	}
	return strings.TrimSpace(line)
}

// Paths inside the image that XmppdArgs refers to.
const (
	DataDir        = "/var/lib/xmppd"
	AdminSocket    = "/run/xmppd/admin.sock"
	C2SAddr        = ":5222"
	C2STLSAddr     = ":5223" // direct TLS, XEP-0368
	ClusterKeyFile = "/run/xmppd/cluster.key"
	// ClusterPort is xmppd's inter-node port (raft, forwarding), the same on every node.
	ClusterPort = "7400"
)

// Runtime is what init learned while booting and xmppd needs.
type Runtime struct {
	NodeName   string     // hostname
	Addr       netip.Addr // primary address (cluster traffic binds and advertises it)
	ConfigFile string     // fetched xedge.config ("" for none)
}

// XmppdArgs returns the xmppd command line for this configuration. With a cluster key
// the node is clustered: it listens for peers on its primary address, port
// ClusterPort, reads the key from ClusterKeyFile (init writes it, mode 0600, so it is
// not visible in ps) and joins the seeds (a seed without a port gets ClusterPort);
// without seeds it bootstraps a new cluster.
func (c Config) XmppdArgs(rt Runtime) []string {
	args := []string{"--domain", c.Domain, "--data", DataDir, "--c2s", C2SAddr, "--c2s-tls", C2STLSAddr, "--admin-socket", AdminSocket, "--log-level", c.LogLevel}
	if rt.NodeName != "" {
		args = append(args, "--node-name", rt.NodeName)
	}
	// Always explicit: xmppd's own default is registration on, so leaving the
	// flag out would turn xedge.registration=0 into "on".
	args = append(args, fmt.Sprintf("--allow-registration=%t", c.Registration))
	if c.Registration {
		// xmppd's own policy opens registration on loopback listeners only;
		// the appliance's listeners are not, and xedge.registration=1 means open.
		args = append(args, "--register", "allow")
	}
	if rt.ConfigFile != "" {
		args = append(args, "--config", rt.ConfigFile)
	}
	if c.Storage != "" {
		args = append(args, "--storage", c.Storage)
	}
	if c.ClusterKey != "" && rt.Addr.IsValid() {
		args = append(args, "--cluster-addr", net.JoinHostPort(rt.Addr.String(), ClusterPort), "--cluster-key-file", ClusterKeyFile)
		var join []string
		for _, s := range c.Seeds {
			if _, _, err := net.SplitHostPort(s); err != nil {
				s = net.JoinHostPort(s, ClusterPort)
			}
			join = append(join, s)
		}
		if len(join) > 0 {
			args = append(args, "--join", strings.Join(join, ","))
		}
	}
	return args
}

// Describe renders the configuration for the console, one "key value (source)" a line.
func (c Config) Describe() []string {
	src := func(k string) string {
		if s := c.Source[k]; s != "" {
			return " (" + s + ")"
		}
		return ""
	}
	key := "unset"
	if c.ClusterKey != "" {
		key = "set"
	}
	lines := []string{
		"domain    " + orDash(c.Domain) + src(KeyDomain),
		"key       " + key + src(KeyClusterKey),
		"seeds     " + orDash(strings.Join(c.Seeds, ",")) + src(KeySeeds),
		"storage   " + orDash(c.Storage) + src(KeyStorage),
		"config    " + orDash(c.ConfigURL) + src(KeyConfigURL),
		"boot      " + orDash(c.Boot) + src(KeyBoot),
		fmt.Sprintf("restarts  %d/%s%s", c.MaxRestarts, c.RestartWindow, src(KeyRestarts)),
	}
	return lines
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
