// Package version implements software version (XEP-0092) for the server: name
// "xedge", the build's version (xedge/xmppd/version.Version) and, unless hidden,
// the operating system.
//
// It keeps no tables. It must not import the xmppd core or other modules.
package version

import (
	"context"
	"runtime"

	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	xv "xedge/xmppd/version"
	"xedge/xmppd/xmlstream"
)

// NS is the XEP-0092 namespace.
const NS = "jabber:iq:version"

// Module answers version queries to the server.
type Module struct{ hideOS bool }

// New returns the module; hideOS leaves out the <os/> element.
func New(hideOS bool) *Module { return &Module{hideOS: hideOS} }

// Name implements module.Module.
func (*Module) Name() string { return "version" }

// Start registers the handler.
func (m *Module) Start(_ context.Context, h module.Host) error {
	h.DiscoFeature(NS)
	h.HandleIQ(NS, func(ctx context.Context, h module.Host, iq *module.IQ) {
		switch {
		case iq.To.Local != "":
			// A user's bare JID: versions are per client, ask a full JID.
			modutil.ReplyError(ctx, h, iq, module.ErrCancel, "service-unavailable", "")
		case iq.Stanza.Attr("type") != "get":
			modutil.ReplyError(ctx, h, iq, module.ErrCancel, "not-allowed", "")
		default:
			q := xmlstream.New(NS, "query")
			q.Append(xmlstream.New(NS, "name").AppendText("xedge"))
			q.Append(xmlstream.New(NS, "version").AppendText(xv.Version))
			if !m.hideOS {
				q.Append(xmlstream.New(NS, "os").AppendText(runtime.GOOS + "/" + runtime.GOARCH))
			}
			modutil.ReplyResult(ctx, h, iq, q)
		}
	})
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }
