// Package all composes xmppd's feature modules in start order for the core's
// composition root. It owns only that list and its options; it must not import the
// xmppd core packages.
package all

import (
	"xedge/xmppd/mod/blocking"
	"xedge/xmppd/mod/carbons"
	"xedge/xmppd/mod/disco"
	"xedge/xmppd/mod/last"
	"xedge/xmppd/mod/mam"
	"xedge/xmppd/mod/muc"
	"xedge/xmppd/mod/offline"
	"xedge/xmppd/mod/pep"
	"xedge/xmppd/mod/ping"
	"xedge/xmppd/mod/presence"
	"xedge/xmppd/mod/private"
	"xedge/xmppd/mod/push"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/mod/vcard"
	"xedge/xmppd/mod/version"
	"xedge/xmppd/module"
)

// DefaultOfflineMax is the per-user offline message cap used when Options.OfflineMax
// is 0: 100, what ejabberd's shipped configuration gives ordinary users through
// max_user_offline_messages (Prosody has no cap).
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
	} else if o.OfflineMax < 0 {
		o.OfflineMax = -1
	}
	r := roster.New()
	b := blocking.New(r)
	off := offline.New(o.OfflineMax)
	archive := mam.New(mam.Options{InRoster: func(u, c string) bool { _, ok := r.Get(u, c); return ok }})
	return []module.Module{
		r,
		b,
		presence.New(r, presence.Options{Blocked: b.IsBlocked, HasBlockList: b.HasList, SetPresence: off.PresenceSetter()}),
		off,
		carbons.New(),
		disco.New(r),
		version.New(false),
		ping.New(),
		vcard.New(0),
		private.New(),
		last.New(last.Options{Subscription: func(u, c string) string { it, _ := r.Get(u, c); return it.Sub }}),
		archive,
		pep.New(r),
		muc.New().WithArchive(archive.Rooms()),
		push.New(),
	}
}
