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
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
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
}

// Defaults returns the embedded defaults (what `make run` uses).
func Defaults() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "xmppd"
	}
	return Config{
		Domain: "localhost", Data: "./var", Node: host,
		C2S: "127.0.0.1:5222", C2STLS: "127.0.0.1:5223",
		AllowRegistration: true, RequireTLS: true, LogLevel: "info",
		C2SShaper: 1 << 20, MaxStanza: 256 << 10, MaxDepth: 32,
		Keepalive: 60 * time.Second, IdleTimeout: 5 * time.Minute, AuthTimeout: 60 * time.Second,
		SMTimeout: 5 * time.Minute, SMMaxQueue: 1000, SendQueue: 1000,
		AuthFailMax: 5, AuthFailTime: time.Minute, MaxOffline: 100, RegWindow: time.Hour,
		StopTimeout: 10 * time.Second,
	}
}

// FlagSet returns a flag set bound to c (which should hold the defaults).
func (c *Config) FlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "YAML file with the same keys as these flags")
	fs.StringVar(&c.Domain, "domain", c.Domain, "XMPP domain served")
	fs.StringVar(&c.Data, "data", c.Data, "data directory (database, TLS certificate, admin socket)")
	fs.StringVar(&c.Node, "node", c.Node, "node name in the cluster and the storage")
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
		if err := fs.Set(name, fmt.Sprint(v)); err != nil {
			return fmt.Errorf("config %s: key %q: %w", path, k, err)
		}
	}
	return nil
}

// Finish fills the derived defaults (paths under Data).
func (c *Config) Finish() {
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
	if c.C2S == "" && c.C2STLS == "" {
		errs = append(errs, errors.New("no client listener: set c2s or c2s-tls"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}
