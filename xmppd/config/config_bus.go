package config

import (
	"errors"
	"flag"
	"time"
)

// BusConfig holds the settings of inter-node stanza routing (the cluster bus).
// Its flags, defaults and checks register themselves in init (registerFeature).
type BusConfig struct {
	// QueueMax bounds the stanzas queued or unacknowledged per peer node;
	// beyond it a stanza is routed as if the peer's session were gone.
	QueueMax int
	// ConflictSweep is how often a node looks for newer binds of its sessions'
	// JIDs on other nodes (two binds at the same moment on two nodes).
	ConflictSweep time.Duration
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			c.Bus = BusConfig{QueueMax: 65536, ConflictSweep: 500 * time.Millisecond}
		},
		flags: func(c *Config, fs *flag.FlagSet) {
			fs.IntVar(&c.Bus.QueueMax, "bus-queue", c.Bus.QueueMax, "cluster bus: stanzas queued or unacknowledged per peer node")
			fs.DurationVar(&c.Bus.ConflictSweep, "bus-conflict-sweep", c.Bus.ConflictSweep, "cluster bus: how often to look for newer binds of local sessions' JIDs on other nodes")
		},
		check: func(c *Config) []error {
			var errs []error
			if c.Bus.QueueMax < 16 {
				errs = append(errs, errors.New("bus-queue: at least 16"))
			}
			if c.Bus.ConflictSweep < 10*time.Millisecond {
				errs = append(errs, errors.New("bus-conflict-sweep: at least 10ms"))
			}
			return errs
		},
	})
}
