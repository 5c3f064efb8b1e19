// Package ping implements XEP-0199 (XMPP Ping): it answers urn:xmpp:ping IQs
// addressed to the server or to a local user's bare JID with an empty result.
// Pinging idle clients is the core's job, not this module's.
//
// It owns nothing else and must not import the xmppd core or other modules.
package ping

import (
	"context"

	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
)

// NS is the XEP-0199 namespace.
const NS = "urn:xmpp:ping"

// Module answers pings.
type Module struct{}

// New returns the ping module.
func New() *Module { return &Module{} }

// Name implements module.Module.
func (*Module) Name() string { return "ping" }

// Start registers the IQ handler and disco feature.
func (*Module) Start(_ context.Context, h module.Host) error {
	h.DiscoFeature(NS)
	h.HandleIQ(NS, func(ctx context.Context, h module.Host, iq *module.IQ) {
		if iq.Stanza.Attr("type") != "get" {
			modutil.ReplyError(ctx, h, iq, module.ErrCancel, "bad-request", "ping is an IQ get")
			return
		}
		modutil.ReplyResult(ctx, h, iq)
	})
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }
