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
	st    storage.Store
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
	m.st = h.Store()
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
		frag, err := m.Get(user, kids[0].Space, kids[0].Local)
		if err != nil {
			h.Logger().Error("private: undecodable stored fragment", "user", user, "ns", kids[0].Space, "err", err)
		}
		modutil.ReplyResult(ctx, h, iq, xmlstream.New(NS, "query").Append(frag))
	case "set":
		ref, err := m.store(ctx, h.Store(), user, kids)
		switch {
		case ref != nil:
			modutil.ReplyError(ctx, h, iq, ref.typ, ref.cond, ref.text)
		case err != nil:
			modutil.ReplyStoreError(ctx, h, iq, "private set", err)
		default:
			modutil.ReplyResult(ctx, h, iq)
		}
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
	}
}

// refusal is a set refused for what it stores (a stanza error).
type refusal struct{ typ, cond, text string }

func (r *refusal) Error() string { return r.text }

// store writes fragments (namespaces checked by the caller) for user in one
// batch: a fragment over MaxFragmentBytes, or more than MaxFragments stored,
// is a refusal and nothing is written.
func (m *Module) store(ctx context.Context, st storage.Store, user string, kids []*xmlstream.Element) (*refusal, error) {
	unlock := m.locks.Lock(user)
	defer unlock()
	n, _ := m.tab.Count(modutil.UserPrefix(user))
	var ops []storage.Op
	for _, k := range kids {
		b := modutil.Encode(k)
		if len(b) > MaxFragmentBytes {
			return &refusal{module.ErrModify, "not-acceptable", fmt.Sprintf("fragment larger than %d bytes", MaxFragmentBytes)}, nil
		}
		if _, ok, _ := m.tab.Get(key(user, k)); !ok {
			n++
		}
		ops = append(ops, storage.Put(Table, key(user, k), b))
	}
	if n > MaxFragments {
		return &refusal{module.ErrCancel, "not-allowed", "too many stored fragments"}, nil
	}
	return nil, st.Apply(ctx, ops...)
}

// Get returns user's stored fragment <local xmlns=space/>: an empty element
// when none is stored (as a client's get answers), and with an error when the
// stored one does not decode.
func (m *Module) Get(user, space, local string) (*xmlstream.Element, error) {
	frag := xmlstream.New(space, local)
	b, ok, err := m.tab.Get(modutil.Key(user, space, local))
	if err != nil || !ok {
		return frag, err
	}
	e, err := modutil.Decode(b)
	if err != nil {
		return frag, err
	}
	return e, nil
}

// Set stores frag for user as a client's set would (an administrator's
// write: xmppctl private_set): a reserved namespace, a fragment too large or
// one too many is refused.
func (m *Module) Set(ctx context.Context, user string, frag *xmlstream.Element) error {
	if Reserved(frag.Space) {
		return fmt.Errorf("private: reserved namespace %q", frag.Space)
	}
	ref, err := m.store(ctx, m.st, user, []*xmlstream.Element{frag})
	if ref != nil {
		return fmt.Errorf("private: %w", ref)
	}
	return err
}
