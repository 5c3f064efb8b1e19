// Package private implements private XML storage (XEP-0049): a user stores and
// retrieves XML fragments keyed by the fragment's root element name and namespace.
// Reserved namespaces (empty, everything under "jabber:" such as jabber:client,
// jabber:server, jabber:x:data and jabber:iq:*, "http://jabber.org/protocol/..." and
// vcard-temp) are refused with <not-acceptable/>; another user's storage with
// <forbidden/>.
//
// Table: private ("user\x00namespace\x00name" -> stored element).
//
// It must not import the xmppd core or other modules.
package private

import (
	"context"
	"fmt"
	"strings"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// NS is the XEP-0049 namespace.
const NS = "jabber:iq:private"

// Table is the private storage table.
const Table = "private"

// Limits.
const (
	MaxFragmentBytes = 64 << 10
	MaxFragments     = 100
)

// Reserved reports whether ns may not be used for private storage.
func Reserved(ns string) bool {
	return ns == "" || strings.HasPrefix(ns, "jabber:") || strings.HasPrefix(ns, "http://jabber.org/protocol/") || ns == "vcard-temp"
}

// Module is the private storage module.
type Module struct {
	tab   storage.Table
	locks modutil.Locks
}

// New returns the module.
func New() *Module { return &Module{} }

// Name implements module.Module.
func (*Module) Name() string { return "private" }

// Start declares the table and registers the handler.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	if err := modutil.Declare(ctx, h.Store(), Table); err != nil {
		return fmt.Errorf("private: %w", err)
	}
	var err error
	if m.tab, err = h.Store().Durable(Table); err != nil {
		return fmt.Errorf("private: %w", err)
	}
	h.DiscoFeature(NS)
	h.HandleIQ(NS, m.iq)
	modutil.RemoveUserOnDelete(h, []string{Table}, nil)
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

func key(user string, e *xmlstream.Element) string { return modutil.Key(user, e.Space, e.Local) }

func (m *Module) iq(ctx context.Context, h module.Host, iq *module.IQ) {
	if !modutil.IsOwn(iq) || !modutil.IsLocalUser(h, iq.From) {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "forbidden", "private storage belongs to its owner")
		return
	}
	user := module.UserKey(h, iq.From)
	q := iq.Payload()
	kids := q.Children()
	if q.Local != "query" || len(kids) == 0 {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "one child element with its own namespace expected")
		return
	}
	for _, k := range kids {
		if Reserved(k.Space) {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "not-acceptable", "reserved namespace "+k.Space)
			return
		}
	}
	switch iq.Stanza.Attr("type") {
	case "get":
		if len(kids) != 1 {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "get one fragment at a time")
			return
		}
		res := xmlstream.New(NS, "query")
		frag := xmlstream.New(kids[0].Space, kids[0].Local)
		if b, ok, err := m.tab.Get(key(user, kids[0])); err == nil && ok {
			if e, err := modutil.Decode(b); err == nil {
				frag = e
			} else {
				h.Logger().Error("private: undecodable stored fragment", "user", user, "ns", kids[0].Space, "err", err)
			}
		}
		modutil.ReplyResult(ctx, h, iq, res.Append(frag))
	case "set":
		unlock := m.locks.Lock(user)
		defer unlock()
		n, _ := m.tab.Count(modutil.UserPrefix(user))
		var ops []storage.Op
		for _, k := range kids {
			b := modutil.Encode(k)
			if len(b) > MaxFragmentBytes {
				modutil.ReplyError(ctx, h, iq, module.ErrModify, "not-acceptable", fmt.Sprintf("fragment larger than %d bytes", MaxFragmentBytes))
				return
			}
			if _, ok, _ := m.tab.Get(key(user, k)); !ok {
				n++
			}
			ops = append(ops, storage.Put(Table, key(user, k), b))
		}
		if n > MaxFragments {
			modutil.ReplyError(ctx, h, iq, module.ErrCancel, "not-allowed", "too many stored fragments")
			return
		}
		if err := h.Store().Apply(ctx, ops...); err != nil {
			modutil.ReplyStoreError(ctx, h, iq, "private set", err)
			return
		}
		modutil.ReplyResult(ctx, h, iq)
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
	}
}
