package config

import (
	"errors"
	"flag"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// ComponentConfig holds the settings of external components (XEP-0114,
// docs/components.md). Its flags, defaults and checks register themselves in init.
type ComponentConfig struct {
	Listen  string        // component: host:port of the component listener (empty: off)
	Secrets Secrets       // components: shared secret per component domain
	Timeout time.Duration // component-handshake-timeout
}

// StormConfig holds the storm-control settings (xmppd/mod/storm).
type StormConfig struct {
	PresenceMax     int           // presence-storm-max: identical presences allowed in a row within the window (0: off)
	PresenceWindow  time.Duration // presence-storm-window
	MaxUserSessions int           // max-user-sessions: bound resources per account (0: unlimited)
}

// Secrets maps component domains to their shared secrets. As a flag or YAML string
// it is "domain=secret,domain2=secret2"; in YAML also a map
// `components: {gw.example.com: {secret: S}}`.
type Secrets map[string]string

// String implements flag.Value (secrets are not shown).
func (s *Secrets) String() string {
	if s == nil || *s == nil {
		return ""
	}
	ds := make([]string, 0, len(*s))
	for d := range *s {
		ds = append(ds, d+"=***")
	}
	sort.Strings(ds)
	return strings.Join(ds, ",")
}

// yamlMapEntry matches one entry of a YAML map the config loader has printed:
// map[gw.example.com:map[secret:S] ...].
var yamlMapEntry = regexp.MustCompile(`([^\s:\[\]]+):map\[secret:([^\]\s]*)\]`)

// Set implements flag.Value.
func (s *Secrets) Set(v string) error {
	m := map[string]string{}
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "map[") {
		for _, e := range yamlMapEntry.FindAllStringSubmatch(v, -1) {
			m[strings.ToLower(e[1])] = e[2]
		}
		if len(m) == 0 && v != "map[]" {
			return fmt.Errorf("components: want {DOMAIN: {secret: SECRET}, ...} (secrets without spaces or brackets)")
		}
	} else if v != "" {
		for _, kv := range strings.Split(v, ",") {
			d, sec, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok || d == "" || sec == "" {
				return fmt.Errorf("components: %q: want DOMAIN=SECRET", kv)
			}
			m[strings.ToLower(d)] = sec
		}
	}
	*s = m
	return nil
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			c.Component = ComponentConfig{Timeout: 30 * time.Second}
			c.Storm = StormConfig{PresenceMax: 10, PresenceWindow: 60 * time.Second, MaxUserSessions: 10}
		},
		flags: func(c *Config, fs *flag.FlagSet) {
			k := &c.Component
			fs.StringVar(&k.Listen, "component", k.Listen, "listener for external components, XEP-0114 jabber:component:accept, e.g. 127.0.0.1:5347 (empty: off)")
			fs.Var(&k.Secrets, "components", "component domains and their shared secrets: DOMAIN=SECRET,... (YAML: components: {DOMAIN: {secret: SECRET}})")
			fs.DurationVar(&k.Timeout, "component-handshake-timeout", k.Timeout, "time a component has to complete its handshake")
			st := &c.Storm
			fs.IntVar(&st.PresenceMax, "presence-storm-max", st.PresenceMax, "a session sending more than this many identical presences in a row within presence-storm-window is closed with policy-violation (mod_sunshine; 0: off)")
			fs.DurationVar(&st.PresenceWindow, "presence-storm-window", st.PresenceWindow, "window of presence-storm-max")
			fs.IntVar(&st.MaxUserSessions, "max-user-sessions", st.MaxUserSessions, "bound resources per account; a new bind beyond it replaces the oldest session (ejabberd's max_user_sessions; 0: unlimited)")
		},
		check: func(c *Config) []error {
			var errs []error
			k := c.Component
			if k.Listen != "" {
				if err := checkHostPort("component", k.Listen, true); err != nil {
					errs = append(errs, err)
				}
				if len(k.Secrets) == 0 {
					errs = append(errs, errors.New("component listener without components: set components (DOMAIN=SECRET,...)"))
				}
			}
			for d := range k.Secrets {
				if d == strings.ToLower(c.Domain) {
					errs = append(errs, fmt.Errorf("components: %s is the server's own domain", d))
				}
			}
			if k.Timeout <= 0 {
				errs = append(errs, errors.New("component-handshake-timeout must be positive"))
			}
			st := c.Storm
			if st.PresenceMax < 0 || st.MaxUserSessions < 0 || (st.PresenceMax > 0 && st.PresenceWindow <= 0) {
				errs = append(errs, errors.New("presence-storm-max and max-user-sessions must be >= 0 and presence-storm-window positive"))
			}
			return errs
		},
	})
}
