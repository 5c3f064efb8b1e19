// Package all composes xmppd's feature modules in start order for the core's
// composition root. It owns only that list and its options; it must not import the
// xmppd core packages.
package all

import (
	"xedge/xmppd/mod/ping"
	"xedge/xmppd/mod/presence"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/module"
)

// DefaultOfflineMax is the per-user offline message cap used when Options.OfflineMax
// is 0 (ejabberd's max_user_offline_messages defaults to 5000 via its shaper rules;
// Prosody has no cap; xedge chooses 100 to bound storage on small appliances).
const DefaultOfflineMax = 100

// Options configure the modules.
type Options struct {
	// OfflineMax is the per-user offline message cap; 0 means DefaultOfflineMax,
	// negative means unlimited.
	OfflineMax int
}

// Modules returns the feature modules in start order.
func Modules(o Options) []module.Module {
	if o.OfflineMax == 0 {
		o.OfflineMax = DefaultOfflineMax
	}
	r := roster.New()
	return []module.Module{
		r,
		presence.New(r, presence.Options{}),
		ping.New(),
	}
}
