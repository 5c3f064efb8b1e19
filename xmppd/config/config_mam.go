package config

import (
	"flag"
	"fmt"
)

// MAMConfig holds the message archive's (XEP-0313) retention caps. Its flags,
// defaults and checks register themselves in init (registerFeature).
// docs/mam.md explains them.
type MAMConfig struct {
	Max    int // mam-max: messages kept per archive (-1: unlimited)
	RAMMax int // mam-ram-max: the cap while storage is RAM-only (-1: none beyond mam-max)
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) { c.MAM = MAMConfig{Max: 10000, RAMMax: 1000} },
		flags: func(c *Config, fs *flag.FlagSet) {
			fs.IntVar(&c.MAM.Max, "mam-max", c.MAM.Max, "messages kept per message archive (user or room); the oldest are dropped beyond it (-1: unlimited; archives are held in RAM with the durable tables, so this bounds memory per user)")
			fs.IntVar(&c.MAM.RAMMax, "mam-ram-max", c.MAM.RAMMax, "the per-archive cap while storage is RAM-only (ram-only, degraded-ram); -1: mam-max applies")
		},
		check: func(c *Config) []error {
			var errs []error
			if c.MAM.Max == 0 || c.MAM.Max < -1 {
				errs = append(errs, fmt.Errorf("mam-max %d: want > 0 or -1", c.MAM.Max))
			}
			if c.MAM.RAMMax == 0 || c.MAM.RAMMax < -1 {
				errs = append(errs, fmt.Errorf("mam-ram-max %d: want > 0 or -1", c.MAM.RAMMax))
			}
			return errs
		},
	})
}
