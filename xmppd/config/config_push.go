package config

import "flag"

// PushConfig holds the settings of push notifications (XEP-0357,
// xmppd/mod/push). Its flags and defaults register themselves in init.
type PushConfig struct {
	IncludeBody   bool // push-include-body: send last-message-body to the app server (default off)
	IncludeSender bool // push-include-sender: send last-message-sender (default on)
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) { c.Push = PushConfig{IncludeSender: true} },
		flags: func(c *Config, fs *flag.FlagSet) {
			p := &c.Push
			fs.BoolVar(&p.IncludeBody, "push-include-body", p.IncludeBody, "push notifications (XEP-0357) carry the message body to the app server (and through it the platform's push service)")
			fs.BoolVar(&p.IncludeSender, "push-include-sender", p.IncludeSender, "push notifications carry the sender's JID")
		},
	})
}
