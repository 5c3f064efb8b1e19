package config

import (
	"flag"
	"fmt"
)

// RegisterConfig holds the in-band registration policy (XEP-0077), as
// ejabberd's `register` access rule names it. Its flags, defaults and checks
// register themselves in init (registerFeature).
type RegisterConfig struct {
	// Policy is register: allow (on every client listener), deny (nowhere) or
	// loopback (only on listeners bound to a loopback address, 127.0.0.0/8 or
	// ::1: the host's own tools and tests; the default). allow-registration
	// false turns registration off whatever the policy.
	Policy string
}

// Registration policies.
const (
	RegisterAllow    = "allow"
	RegisterDeny     = "deny"
	RegisterLoopback = "loopback"
)

// EffectiveRegister is the policy in force: deny when allow-registration is
// false, else register.
func (c *Config) EffectiveRegister() string {
	if !c.AllowRegistration {
		return RegisterDeny
	}
	return c.Register.Policy
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) { c.Register = RegisterConfig{Policy: RegisterLoopback} },
		flags: func(c *Config, fs *flag.FlagSet) {
			fs.StringVar(&c.Register.Policy, "register", c.Register.Policy,
				"in-band registration (XEP-0077) per client listener: allow (every listener), deny (none) or loopback (only listeners bound to a loopback address; WebSocket streams only with allow)")
		},
		check: func(c *Config) []error {
			switch c.Register.Policy {
			case RegisterAllow, RegisterDeny, RegisterLoopback:
				return nil
			}
			return []error{fmt.Errorf("register %q: want allow, deny or loopback", c.Register.Policy)}
		},
	})
}
