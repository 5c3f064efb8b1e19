// Package disco implements service discovery (XEP-0030) for the server and for local
// accounts: disco#info on the domain answers identity server/im "xedge" and every
// feature modules advertised (Host.DiscoFeatures); disco#items on the domain lists
// the configured service items and the domains modules serve through
// module.DomainRouter (e.g. the MUC service). A disco#info to an account's bare
// JID is answered by the server (identity account/registered, and pubsub/pep with
// the pubsub and bookmarks features when a PEP module advertised them) when asked by the
// account itself or by a contact with a presence subscription to it, and with
// <service-unavailable/> otherwise so the account's existence is not revealed.
//
// It keeps no tables. It must not import the xmppd core; of the modules it imports
// only roster.
package disco

import (
	"context"
	"strings"
	"sync"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NSInfo  = "http://jabber.org/protocol/disco#info"
	NSItems = "http://jabber.org/protocol/disco#items"

	nsPubsub    = "http://jabber.org/protocol/pubsub"
	nsPush      = "urn:xmpp:push:0"
	nsBookmarks = "urn:xmpp:bookmarks:1#"
)

// CapsNode is the entity-capabilities node (XEP-0115) the server advertises in its
// stream features (xmppd/c2s.CapsNode, which must stay equal: a server test checks
// it). A disco#info to the domain with node CapsNode#ver is answered like one
// without a node, as XEP-0115 §6.2 has clients ask.
const CapsNode = "https://xedge.invalid/xmppd"

// Item is a service item listed in the domain's disco#items.
type Item struct{ JID, Name, Node string }

// Module is the disco module.
type Module struct {
	r     *roster.Module
	name  string
	items []Item

	contactMu sync.RWMutex
	contact   *xmlstream.Element // XEP-0157 serverinfo form; nil: none configured
}

// New returns the module; r (may be nil) decides who may discover an account, items
// are listed on the domain.
func New(r *roster.Module, items ...Item) *Module {
	return &Module{r: r, name: "xedge", items: items}
}

// Name implements module.Module.
func (*Module) Name() string { return "disco" }

// Start registers the IQ handlers.
func (m *Module) Start(_ context.Context, h module.Host) error {
	h.DiscoFeature(NSInfo)
	h.DiscoFeature(NSItems)
	h.HandleIQ(NSInfo, m.info)
	h.HandleIQ(NSItems, m.itemsIQ)
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

// allowed reports whether from may discover the account bare.
func (m *Module) allowed(h module.Host, from, bare jid.JID) bool {
	if from.Bare() == bare.Bare() {
		return true
	}
	if m.r == nil {
		return false
	}
	it, ok := m.r.Get(module.UserKey(h, bare), from.Bare().String())
	return ok && roster.HasFrom(it.Sub)
}

// plainGet answers a disco request that is not a get (not-allowed) or names a
// node (item-not-found: we publish none) and reports whether it may proceed.
func plainGet(ctx context.Context, h module.Host, iq *module.IQ) bool {
	if iq.Stanza.Attr("type") != "get" {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "not-allowed", "")
		return false
	}
	if iq.Payload().Attr("node") != "" {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "item-not-found", "")
		return false
	}
	return true
}

func (m *Module) info(ctx context.Context, h module.Host, iq *module.IQ) {
	node := iq.Payload().Attr("node")
	if iq.To.Local == "" && strings.HasPrefix(node, CapsNode+"#") && iq.Stanza.Attr("type") == "get" {
		node = strings.Clone(node) // the answer below echoes it
	} else if node = ""; !plainGet(ctx, h, iq) {
		return
	}
	res := xmlstream.New(NSInfo, "query")
	if node != "" {
		res.SetAttr("node", node)
	}
	switch {
	case iq.To.Local == "":
		res.Append(xmlstream.New(NSInfo, "identity", "category", "server", "type", "im", "name", m.name))
		for _, f := range h.DiscoFeatures() {
			res.Append(xmlstream.New(NSInfo, "feature", "var", f))
		}
		if x := m.contactForm(); x != nil {
			res.Append(x)
		}
	case m.allowed(h, iq.From, iq.To):
		res.Append(xmlstream.New(NSInfo, "identity", "category", "account", "type", "registered"))
		res.Append(xmlstream.New(NSInfo, "feature", "var", NSInfo))
		res.Append(xmlstream.New(NSInfo, "feature", "var", NSItems))
		// A PEP module's features belong to the account too (XEP-0163 §6.1, XEP-0402 §3.3).
		pep := false
		for _, f := range h.DiscoFeatures() {
			if strings.HasPrefix(f, nsPubsub) || strings.HasPrefix(f, nsBookmarks) {
				pep = true
				res.Append(xmlstream.New(NSInfo, "feature", "var", f))
			} else if f == nsPush {
				res.Append(xmlstream.New(NSInfo, "feature", "var", f)) // XEP-0357 §5: on the account
			}
		}
		if pep {
			res.Append(xmlstream.New(NSInfo, "identity", "category", "pubsub", "type", "pep"))
		}
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "service-unavailable", "")
		return
	}
	modutil.ReplyResult(ctx, h, iq, res)
}

func (m *Module) itemsIQ(ctx context.Context, h module.Host, iq *module.IQ) {
	if !plainGet(ctx, h, iq) {
		return
	}
	res := xmlstream.New(NSItems, "query")
	switch {
	case iq.To.Local == "":
		for _, it := range m.items {
			e := xmlstream.New(NSItems, "item", "jid", it.JID)
			e.SetAttr("name", it.Name)
			e.SetAttr("node", it.Node)
			res.Append(e)
		}
		if dr, ok := h.(module.DomainRouter); ok {
			for _, d := range dr.ServedDomains() {
				if otherHosts(h, iq.To.Domain, d) {
					continue // a service of another virtual host (conference.b.example on a.example)
				}
				res.Append(xmlstream.New(NSItems, "item", "jid", d))
			}
		}
	case iq.From.Bare() == iq.To.Bare():
		// The account's own available resources.
		for _, s := range h.Sessions(iq.To) {
			if s.Presence() != nil {
				res.Append(xmlstream.New(NSItems, "item", "jid", s.JID().String()))
			}
		}
	case m.allowed(h, iq.From, iq.To):
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "service-unavailable", "")
		return
	}
	modutil.ReplyResult(ctx, h, iq, res)
}

// otherHosts reports whether service domain d belongs to a served host other
// than host: it is a subdomain of that one and not of host.
func otherHosts(h module.Host, host, d string) bool {
	if strings.HasSuffix(d, "."+host) {
		return false
	}
	for _, o := range module.Hosts(h) {
		if o != host && strings.HasSuffix(d, "."+o) {
			return true
		}
	}
	return false
}
