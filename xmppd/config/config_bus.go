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
	// Heartbeat is the interval of the keepalives on every peer link (0:
	// none); HeartbeatTimeout is how long a link may stay silent before it is
	// closed and redialed (what it had not delivered is written again).
	Heartbeat        time.Duration
	HeartbeatTimeout time.Duration
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			c.Bus = BusConfig{QueueMax: 65536, ConflictSweep: 500 * time.Millisecond,
				Heartbeat: 200 * time.Millisecond, HeartbeatTimeout: time.Second}
		},
		flags: func(c *Config, fs *flag.FlagSet) {
			fs.IntVar(&c.Bus.QueueMax, "bus-queue", c.Bus.QueueMax, "cluster bus: stanzas queued or unacknowledged per peer node")
			fs.DurationVar(&c.Bus.ConflictSweep, "bus-conflict-sweep", c.Bus.ConflictSweep, "cluster bus: how often to look for newer binds of local sessions' JIDs on other nodes")
			fs.DurationVar(&c.Bus.Heartbeat, "bus-heartbeat", c.Bus.Heartbeat, "cluster bus: keepalive interval on each peer link (0: none)")
			fs.DurationVar(&c.Bus.HeartbeatTimeout, "bus-heartbeat-timeout", c.Bus.HeartbeatTimeout, "cluster bus: a peer link silent this long is closed and redialed, its unacknowledged messages written again")
		},
		check: func(c *Config) []error {
			var errs []error
			if c.Bus.QueueMax < 16 {
				errs = append(errs, errors.New("bus-queue: at least 16"))
			}
			if c.Bus.ConflictSweep < 10*time.Millisecond {
				errs = append(errs, errors.New("bus-conflict-sweep: at least 10ms"))
			}
			if c.Bus.Heartbeat < 0 || (c.Bus.Heartbeat > 0 && c.Bus.Heartbeat < 10*time.Millisecond) {
				errs = append(errs, errors.New("bus-heartbeat: 0 (none) or at least 10ms"))
			}
			if c.Bus.Heartbeat > 0 && c.Bus.HeartbeatTimeout < 2*c.Bus.Heartbeat {
				errs = append(errs, errors.New("bus-heartbeat-timeout: at least twice bus-heartbeat"))
			}
			return errs
		},
	})
}
