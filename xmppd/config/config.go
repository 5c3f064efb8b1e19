// Package config is xmppd's configuration: every setting is a command-line flag, and
// the YAML file given by --config uses the same key names (an underscore may stand for
// a dash, so c2s_shaper and c2s-shaper are the same key). Flags given on the command
// line win over the file. docs/xmppd.md lists every key.
//
// It owns parsing and defaults; it must not import other xmppd packages.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"xedge/iscsi"
	"xedge/storage/blockdev"
)

// Config is xmppd's configuration.
type Config struct {
	ConfigFile        string
	Domain            string
	Data              string
	Node              string
	C2S               string
	C2STLS            string
	AdminSocket       string
	AllowRegistration bool
	RequireTLS        bool
	Cert, Key         string
	LogLevel          string

	C2SShaper    int           // bytes/s per connection, 0 = off
	MaxStanza    int           // bytes
	MaxDepth     int           // element nesting
	Keepalive    time.Duration // whitespace ping after this much send idleness, 0 = off
	IdleTimeout  time.Duration // close a stream silent this long, 0 = off
	AuthTimeout  time.Duration // time to finish authentication
	SMTimeout    time.Duration // XEP-0198 resumption window
	SMMaxQueue   int           // unacked stanzas kept per session
	SendQueue    int           // outbound stanza queue per session
	AuthFailMax  int           // failed authentications per IP before throttling
	AuthFailTime time.Duration // window and refusal period of the throttle
	RegLimit     int           // in-band registrations per IP within RegWindow, 0 = unlimited
	RegWindow    time.Duration
	MaxOffline   int
	StopTimeout  time.Duration

	// Memory policy of the Go runtime (docs/performance.md, "Memory policy").
	GCPercent          int           // Go's GOGC for xmppd; 0 = the runtime's (GOGC env, else 100)
	MemoryLimitMiB     int           // soft memory limit (Go's GOMEMLIMIT) in MiB; 0 = none
	GCMinHeapMiB       int           // floor under the GC's heap target in MiB (fewer collections on a small live heap); 0 = none
	ReleaseMemoryAfter time.Duration // after an allocation burst, collect and return free memory once the heap has been quiet this long; 0 = off

	// Storage and cluster (docs/xmppd.md, "Storage and clustering").
	Storage        string // "dir" (storage/local under <data>/db), "file:PATH[?size=BYTES]" or "iscsi://..."
	ClusterAddr    string // host:port for raft and cluster RPC; empty = single node (no raft)
	AdvertiseAddr  string // address peers dial, if not ClusterAddr
	Join           string // comma-separated seed cluster addresses
	ClusterKeyFile string // file holding the cluster key
	ClusterKey     string // the cluster key itself (visible in ps: prefer ClusterKeyFile)
	OnStorageLoss  string // "ram" or "read-only"
	Witness        bool   // vote in raft, serve no XMPP (no client listeners)
	LeaveOnStop    bool   // leave the cluster on SIGTERM before stopping
	JoinTimeout    time.Duration
	// Raft tuning (0 = storage/replicated's production defaults); for tests.
	RaftHeartbeatTimeout time.Duration
	RaftElectionTimeout  time.Duration
	RaftLeaseTimeout     time.Duration
	RaftReportInterval   time.Duration

	// Feature settings, each declared with its flags, defaults and checks in a
	// file of its own (config_<feature>.go) that registers itself in feature
	// below, so features add settings without editing this file.
	Discovery DiscoveryConfig // config_discovery.go: serf, scan, reverse DNS, seeds
	Bus       BusConfig       // config_bus.go: inter-node stanza routing
	VIP       VIPConfig       // config_vip.go: the VIP pool, firewall, DHCP
	DNS       DNSConfig       // config_dns.go: DNS publishing (embedded server, RFC 2136)
	Ops       OpsConfig       // config_ops.go: HTTP listener, metrics, web admin
	Component ComponentConfig // config_component.go: external components (XEP-0114)
	Storm     StormConfig     // config_component.go: presence storms, sessions per user
	ConnCaps  ConnCapsConfig  // config_conncaps.go: connections per IP, shapers per listener
	Upload    UploadConfig    // config_upload.go: HTTP upload (XEP-0363), WebSocket (RFC 7395), host-meta
	MAM       MAMConfig       // config_mam.go: message archive caps
	Auth      AuthConfig      // config_auth.go: authentication backend (internal, external, sql, ldap)
	S2S       S2SConfig       // config_s2s.go: server-to-server federation
	Register  RegisterConfig  // config_register.go: in-band registration policy per listener (XEP-0077)
	Push      PushConfig      // config_push.go: push notifications (XEP-0357)
	Contact   ContactConfig   // config_contact.go: contact addresses (XEP-0157)

	// Virtual hosting (config_hosts.go): the served domains and per-host settings.
	Hosts       StringList    // hosts: every domain served; Domain is the default host among them
	HostConfig  HostOverrides // host-config: per-host overrides (ejabberd's host_config)
	domainGiven bool          // domain was set by a flag or the file (else the first of hosts is the default)
}

// featureSettings is one feature file's part of the configuration.
type featureSettings struct {
	defaults func(c *Config)                   // fill the embedded defaults
	flags    func(c *Config, fs *flag.FlagSet) // bind flags (also the YAML keys)
	check    func(c *Config) []error           // validate after Finish
}

// features is filled by the config_<feature>.go files' init functions.
var features []featureSettings

func registerFeature(f featureSettings) { features = append(features, f) }

// MinClusterKey is the shortest cluster key accepted, in bytes.
const MinClusterKey = 16

// Defaults returns the embedded defaults (what `make run` uses).
func Defaults() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "xmppd"
	}
	c := Config{
		Domain: "localhost", Data: "./var", Node: host,
		C2S: "127.0.0.1:5222", C2STLS: "127.0.0.1:5223",
		AllowRegistration: true, RequireTLS: true, LogLevel: "info",
		C2SShaper: 1 << 20, MaxStanza: 256 << 10, MaxDepth: 32,
		Keepalive: 60 * time.Second, IdleTimeout: 5 * time.Minute, AuthTimeout: 60 * time.Second,
		SMTimeout: 5 * time.Minute, SMMaxQueue: 1000, SendQueue: 1000,
		AuthFailMax: 5, AuthFailTime: time.Minute, MaxOffline: 100, RegWindow: time.Hour,
		StopTimeout: 10 * time.Second, ReleaseMemoryAfter: time.Second, GCMinHeapMiB: 128,
		Storage: "dir", OnStorageLoss: "ram", LeaveOnStop: true, JoinTimeout: 30 * time.Second,
	}
	for _, f := range features {
		if f.defaults != nil {
			f.defaults(&c)
		}
	}
	return c
}

// FlagSet returns a flag set bound to c (which should hold the defaults).
func (c *Config) FlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "YAML file with the same keys as these flags")
	fs.StringVar(&c.Domain, "domain", c.Domain, "XMPP domain served")
	fs.StringVar(&c.Data, "data", c.Data, "data directory (database, TLS certificate, admin socket)")
	fs.StringVar(&c.Node, "node", c.Node, "node name in the cluster and the storage (same as node-name)")
	fs.StringVar(&c.Node, "node-name", c.Node, "node name in the cluster and the storage (same as node)")
	fs.StringVar(&c.C2S, "c2s", c.C2S, "client listener with STARTTLS (empty: off)")
	fs.StringVar(&c.C2STLS, "c2s-tls", c.C2STLS, "client listener with direct TLS, XEP-0368 (empty: off)")
	fs.StringVar(&c.AdminSocket, "admin-socket", c.AdminSocket, "admin unix socket (default <data>/admin.sock)")
	fs.BoolVar(&c.AllowRegistration, "allow-registration", c.AllowRegistration, "allow in-band registration (XEP-0077)")
	fs.BoolVar(&c.RequireTLS, "c2s-require-tls", c.RequireTLS, "require STARTTLS before authentication (false: SCRAM allowed in plaintext, e.g. for benchmarks; PLAIN and registration still need TLS)")
	fs.StringVar(&c.Cert, "cert", c.Cert, "TLS certificate PEM (default: self-signed, made under <data>/tls)")
	fs.StringVar(&c.Key, "key", c.Key, "TLS private key PEM (with --cert)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.IntVar(&c.C2SShaper, "c2s-shaper", c.C2SShaper, "bytes/s read per client connection (0: unlimited)")
	fs.IntVar(&c.MaxStanza, "max-stanza", c.MaxStanza, "largest stanza in bytes (policy-violation above)")
	fs.IntVar(&c.MaxDepth, "max-depth", c.MaxDepth, "deepest element nesting in a stanza")
	fs.DurationVar(&c.Keepalive, "keepalive", c.Keepalive, "send a whitespace keepalive after this much idleness (0: off)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "close streams silent this long (0: off)")
	fs.DurationVar(&c.AuthTimeout, "auth-timeout", c.AuthTimeout, "time a client has to authenticate and bind")
	fs.DurationVar(&c.SMTimeout, "sm-timeout", c.SMTimeout, "XEP-0198 resumption window after a connection drops")
	fs.IntVar(&c.SMMaxQueue, "sm-max-queue", c.SMMaxQueue, "unacknowledged stanzas kept per session")
	fs.IntVar(&c.SendQueue, "send-queue", c.SendQueue, "outbound stanzas queued per session before it is disconnected")
	fs.IntVar(&c.AuthFailMax, "auth-fail-max", c.AuthFailMax, "failed authentications per IP within auth-fail-time before refusing")
	fs.DurationVar(&c.AuthFailTime, "auth-fail-time", c.AuthFailTime, "window of the failed-auth counter and the refusal period")
	fs.IntVar(&c.RegLimit, "registration-limit", c.RegLimit, "in-band registrations per IP within registration-window (0: unlimited)")
	fs.DurationVar(&c.RegWindow, "registration-window", c.RegWindow, "window of registration-limit")
	fs.IntVar(&c.MaxOffline, "max-offline", c.MaxOffline, "offline messages kept per user")
	fs.DurationVar(&c.StopTimeout, "stop-timeout", c.StopTimeout, "deadline for a graceful stop")
	fs.IntVar(&c.GCPercent, "gc-percent", c.GCPercent, "Go GC target percentage, as GOGC (0: the runtime's: GOGC from the environment, else 100; -1: GC off, only with memory-limit-mib)")
	fs.IntVar(&c.MemoryLimitMiB, "memory-limit-mib", c.MemoryLimitMiB, "soft memory limit of the Go runtime in MiB, as GOMEMLIMIT (0: none)")
	fs.IntVar(&c.GCMinHeapMiB, "gc-min-heap-mib", c.GCMinHeapMiB, "floor under the GC's heap target in MiB: with a small live heap the GC waits until the heap reaches this instead of collecting every few MiB (the latency tail under load); above it gc-percent applies as is (0: none)")
	fs.DurationVar(&c.ReleaseMemoryAfter, "release-memory-after", c.ReleaseMemoryAfter, "after a burst of allocation (e.g. many logins), once the heap has been quiet this long, collect garbage and return free memory to the OS (0: off)")
	fs.StringVar(&c.Storage, "storage", c.Storage, "where durable tables live: dir (<data>/db), file:PATH[?size=BYTES] or iscsi://[user[:secret]@]host[:port]/target-iqn/lun")
	fs.StringVar(&c.ClusterAddr, "cluster-addr", c.ClusterAddr, "host:port for inter-node traffic (raft); empty: single node")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", c.AdvertiseAddr, "host:port peers dial to reach this node (default: cluster-addr)")
	fs.StringVar(&c.Join, "join", c.Join, "comma-separated cluster addresses of nodes to join (empty: bootstrap a new cluster)")
	fs.StringVar(&c.ClusterKeyFile, "cluster-key-file", c.ClusterKeyFile, "file holding the cluster key (at least 16 bytes; same on every node)")
	fs.StringVar(&c.ClusterKey, "cluster-key", c.ClusterKey, "the cluster key itself (visible in ps; prefer cluster-key-file)")
	fs.StringVar(&c.OnStorageLoss, "on-storage-loss", c.OnStorageLoss, "when storage fails: ram (keep committing in RAM) or read-only (refuse writes)")
	fs.BoolVar(&c.Witness, "witness", c.Witness, "vote in the cluster but serve no XMPP (no client listeners)")
	fs.BoolVar(&c.LeaveOnStop, "leave-on-stop", c.LeaveOnStop, "on SIGTERM leave the cluster (unless this node is its last voter) before stopping")
	fs.DurationVar(&c.JoinTimeout, "join-timeout", c.JoinTimeout, "how long a start waits to join the cluster (reach a leader)")
	fs.DurationVar(&c.RaftHeartbeatTimeout, "raft-heartbeat-timeout", c.RaftHeartbeatTimeout, "raft tuning for tests (0: default 1s)")
	fs.DurationVar(&c.RaftElectionTimeout, "raft-election-timeout", c.RaftElectionTimeout, "raft tuning for tests (0: default 1s)")
	fs.DurationVar(&c.RaftLeaseTimeout, "raft-lease-timeout", c.RaftLeaseTimeout, "raft tuning for tests (0: default 500ms)")
	fs.DurationVar(&c.RaftReportInterval, "raft-report-interval", c.RaftReportInterval, "cluster membership/health report period (0: default 250ms)")
	for _, f := range features {
		if f.flags != nil {
			f.flags(c, fs)
		}
	}
	return fs
}

// Parse parses args into a fresh Config: defaults, then the --config file, then the
// flags given on the command line.
func Parse(name string, args []string) (*Config, *flag.FlagSet, error) {
	c := Defaults()
	fs := c.FlagSet(name)
	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	if fs.NArg() > 0 {
		return nil, fs, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.ConfigFile != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if err := applyFile(fs, c.ConfigFile, set); err != nil {
			return nil, fs, err
		}
	}
	fs.Visit(func(f *flag.Flag) { c.domainGiven = c.domainGiven || f.Name == "domain" })
	c.Finish()
	return &c, fs, c.Validate()
}

func applyFile(fs *flag.FlagSet, path string, set map[string]bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := strings.ReplaceAll(k, "_", "-")
		if name == "config" || fs.Lookup(name) == nil {
			return fmt.Errorf("config %s: unknown key %q", path, k)
		}
		if set[name] {
			continue
		}
		v := m[k]
		if v == nil {
			v = ""
		}
		s := fmt.Sprint(v)
		if mv, ok := v.(map[string]any); ok && name == "host-config" { // a map of maps
			s = flagValue(mv)
		}
		if err := fs.Set(name, s); err != nil {
			return fmt.Errorf("config %s: key %q: %w", path, k, err)
		}
	}
	return nil
}

// Finish fills the derived defaults (paths under Data).
func (c *Config) Finish() {
	c.finishHosts()
	if c.AdminSocket == "" {
		c.AdminSocket = filepath.Join(c.Data, "admin.sock")
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Domain == "" {
		errs = append(errs, errors.New("domain is empty"))
	}
	if c.Data == "" {
		errs = append(errs, errors.New("data is empty"))
	}
	if (c.Cert == "") != (c.Key == "") {
		errs = append(errs, errors.New("cert and key must be given together"))
	}
	if c.MaxStanza < 1024 {
		errs = append(errs, errors.New("max-stanza must be at least 1024"))
	}
	if c.MaxDepth < 4 {
		errs = append(errs, errors.New("max-depth must be at least 4"))
	}
	if c.C2SShaper < 0 || c.RegLimit < 0 || c.SendQueue < 1 || c.SMMaxQueue < 1 || c.AuthFailMax < 1 {
		errs = append(errs, errors.New("c2s-shaper must be >= 0; send-queue, sm-max-queue and auth-fail-max >= 1"))
	}
	if c.GCPercent < -1 || c.MemoryLimitMiB < 0 || c.GCMinHeapMiB < 0 || c.ReleaseMemoryAfter < 0 {
		errs = append(errs, errors.New("gc-percent must be >= -1; memory-limit-mib, gc-min-heap-mib and release-memory-after >= 0"))
	}
	if c.GCPercent == -1 && c.MemoryLimitMiB == 0 {
		errs = append(errs, errors.New("gc-percent -1 (GC off) needs memory-limit-mib"))
	}
	if c.C2S == "" && c.C2STLS == "" && !c.Witness {
		errs = append(errs, errors.New("no client listener: set c2s or c2s-tls"))
	}
	errs = append(errs, c.validateCluster()...)
	for _, f := range features {
		if f.check != nil {
			errs = append(errs, f.check(c)...)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// Clustered reports whether this node runs the replicated store (cluster-addr set).
func (c *Config) Clustered() bool { return c.ClusterAddr != "" }

// JoinList returns the join seeds, split on commas, without blanks.
func (c *Config) JoinList() []string {
	var out []string
	for _, a := range strings.Split(c.Join, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// StorageKind returns "dir", "file" or "iscsi" for the storage setting.
func (c *Config) StorageKind() string {
	switch {
	case strings.HasPrefix(c.Storage, "file:"):
		return "file"
	case strings.HasPrefix(c.Storage, "iscsi://"):
		return "iscsi"
	}
	return c.Storage
}

// LoadClusterKey returns the cluster key from cluster-key-file (surrounding
// whitespace, e.g. the trailing newline, removed) or cluster-key; nil when neither
// is set.
func (c *Config) LoadClusterKey() ([]byte, error) {
	switch {
	case c.ClusterKeyFile != "" && c.ClusterKey != "":
		return nil, errors.New("cluster-key and cluster-key-file are both set: give one")
	case c.ClusterKeyFile != "":
		b, err := os.ReadFile(c.ClusterKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster-key-file: %w", err)
		}
		k := []byte(strings.TrimSpace(string(b)))
		if len(k) < MinClusterKey {
			return nil, fmt.Errorf("cluster-key-file %s: key is %d bytes, need at least %d (e.g. head -c 32 /dev/urandom | base64 > %s)",
				c.ClusterKeyFile, len(k), MinClusterKey, c.ClusterKeyFile)
		}
		return k, nil
	case c.ClusterKey != "":
		if len(c.ClusterKey) < MinClusterKey {
			return nil, fmt.Errorf("cluster-key is %d bytes, need at least %d", len(c.ClusterKey), MinClusterKey)
		}
		return []byte(c.ClusterKey), nil
	}
	return nil, nil
}

// validateCluster checks the storage and cluster settings.
func (c *Config) validateCluster() []error {
	var errs []error
	if c.Node == "" || strings.ContainsAny(c.Node, "# \t\n,") {
		errs = append(errs, fmt.Errorf("node-name %q: must be non-empty, without '#', ',' or spaces", c.Node))
	}
	switch c.OnStorageLoss {
	case "ram", "read-only":
	default:
		errs = append(errs, fmt.Errorf("on-storage-loss %q: want ram or read-only", c.OnStorageLoss))
	}
	switch c.StorageKind() {
	case "dir":
	case "file":
		if _, _, err := blockdev.ParseSpec(c.Storage); err != nil {
			errs = append(errs, fmt.Errorf("storage: %w", err))
		}
	case "iscsi":
		_, err := iscsi.ParseURL(c.Storage)
		if u, _ := url.Parse(c.Storage); err == nil && (u == nil || len(strings.Split(strings.Trim(u.Path, "/"), "/")) != 2) {
			err = errors.New("want iscsi://[user[:secret]@]host[:port]/target-iqn/lun (target and LUN are required)")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("storage %s: %w", redactURL(c.Storage), err))
		}
	default:
		errs = append(errs, fmt.Errorf("storage %q: want dir, file:PATH[?size=BYTES] or iscsi://[user[:secret]@]host[:port]/target-iqn/lun", c.Storage))
	}
	if c.JoinTimeout <= 0 {
		errs = append(errs, errors.New("join-timeout must be positive"))
	}
	for name, d := range map[string]time.Duration{"raft-heartbeat-timeout": c.RaftHeartbeatTimeout,
		"raft-election-timeout": c.RaftElectionTimeout, "raft-lease-timeout": c.RaftLeaseTimeout, "raft-report-interval": c.RaftReportInterval} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	key, kerr := c.LoadClusterKey()
	if !c.Clustered() {
		var extra []string
		if c.Join != "" {
			extra = append(extra, "join")
		}
		if c.AdvertiseAddr != "" {
			extra = append(extra, "advertise-addr")
		}
		if c.Witness {
			extra = append(extra, "witness")
		}
		if c.ClusterKey != "" || c.ClusterKeyFile != "" {
			extra = append(extra, "cluster-key")
		}
		if len(extra) > 0 {
			errs = append(errs, fmt.Errorf("%s set without cluster-addr: a single node has no cluster (set cluster-addr to run clustered)", strings.Join(extra, ", ")))
		}
		return errs
	}
	if err := checkHostPort("cluster-addr", c.ClusterAddr, false); err != nil {
		errs = append(errs, err)
	} else if host, _, _ := net.SplitHostPort(c.ClusterAddr); c.AdvertiseAddr == "" && unspecifiedHost(host) {
		errs = append(errs, fmt.Errorf("cluster-addr %q listens on every address: set advertise-addr to the address peers dial", c.ClusterAddr))
	}
	if c.AdvertiseAddr != "" {
		if err := checkHostPort("advertise-addr", c.AdvertiseAddr, false); err != nil {
			errs = append(errs, err)
		} else if host, _, _ := net.SplitHostPort(c.AdvertiseAddr); unspecifiedHost(host) {
			errs = append(errs, fmt.Errorf("advertise-addr %q: must be an address peers can dial", c.AdvertiseAddr))
		}
	}
	for _, a := range c.JoinList() {
		if err := checkHostPort("join", a, false); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case kerr != nil:
		errs = append(errs, kerr)
	case key == nil:
		errs = append(errs, errors.New("cluster-addr is set but there is no cluster key: inter-node traffic is authenticated and encrypted with it; "+
			"give the same key to every node with --cluster-key-file FILE (e.g. head -c 32 /dev/urandom | base64 > FILE)"))
	}
	return errs
}

func checkHostPort(name, addr string, allowZero bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want host:port: %w", name, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !allowZero) {
		return fmt.Errorf("%s %q: want a fixed port 1-65535", name, addr)
	}
	return nil
}

func unspecifiedHost(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// redactURL hides the CHAP secret of an iscsi:// URL in messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if i := strings.Index(raw, "@"); i >= 0 {
			return "iscsi://***" + raw[i:]
		}
		return raw
	}
	return u.Redacted()
}
