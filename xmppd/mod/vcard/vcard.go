// Package vcard implements vcard-temp (XEP-0054): a user sets their own vCard and
// anyone gets any local account's vCard by its bare JID (an empty <vCard/> when none
// is stored). Stored vCards are size-limited. With the PEP module it converts
// avatars (XEP-0398) and puts the photo hash into presence (XEP-0153): see
// avatar.go.
//
// Table: vcard ("user" -> stored vCard element).
//
// It must not import the xmppd core or other modules.
package vcard

import (
	"context"
	"fmt"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// NS is the vcard-temp namespace.
const NS = "vcard-temp"

// Table is the vCard table.
const Table = "vcard"

// DefaultMaxBytes is the default size limit of a stored vCard (encoded), enough for a
// small avatar photo.
const DefaultMaxBytes = 128 << 10

// Module is the vcard module.
type Module struct {
	max    int
	tab    storage.Table
	st     storage.Store
	hashes hashCache // XEP-0153 photo hashes (avatar.go)
}

// New returns the module; maxBytes <= 0 means DefaultMaxBytes.
func New(maxBytes int) *Module {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Module{max: maxBytes}
}

// Name implements module.Module.
func (*Module) Name() string { return "vcard" }

// Start declares the table and registers the handler.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	if err := modutil.Declare(ctx, h.Store(), Table); err != nil {
		return fmt.Errorf("vcard: %w", err)
	}
	var err error
	m.st = h.Store()
	if m.tab, err = h.Store().Durable(Table); err != nil {
		return fmt.Errorf("vcard: %w", err)
	}
	h.DiscoFeature(NS)
	h.HandleIQ(NS, m.iq)
	h.Hook(module.EvC2SIn, 44, m.presenceHash) // before the presence module broadcasts (50)
	modutil.RemoveUserOnDelete(h, nil, []string{Table})
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

func (m *Module) iq(ctx context.Context, h module.Host, iq *module.IQ) {
	p := iq.Payload()
	if p.Local != "vCard" {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
		return
	}
	switch iq.Stanza.Attr("type") {
	case "get":
		oj := iq.From
		if !modutil.IsOwn(iq) {
			oj = iq.To
		}
		if oj.Local == "" || (!iq.To.IsZero() && !module.IsLocal(h, iq.To.Domain)) {
			modutil.ReplyError(ctx, h, iq, module.ErrCancel, "service-unavailable", "")
			return
		}
		owner := module.UserKey(h, oj)
		b, ok, err := m.tab.Get(owner)
		if err != nil {
			modutil.ReplyStoreError(ctx, h, iq, "vcard get", err)
			return
		}
		if !ok {
			modutil.ReplyResult(ctx, h, iq, xmlstream.New(NS, "vCard"))
			return
		}
		v, err := modutil.Decode(b)
		if err != nil {
			h.Logger().Error("vcard: undecodable stored vCard", "user", owner, "err", err)
			modutil.ReplyResult(ctx, h, iq, xmlstream.New(NS, "vCard"))
			return
		}
		modutil.ReplyResult(ctx, h, iq, v)
	case "set":
		if !modutil.IsOwn(iq) || !modutil.IsLocalUser(h, iq.From) {
			modutil.ReplyError(ctx, h, iq, module.ErrAuth, "forbidden", "only the owner sets a vCard")
			return
		}
		b := modutil.Encode(p)
		if len(b) > m.max {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "not-acceptable", fmt.Sprintf("vCard larger than %d bytes", m.max))
			return
		}
		owner := module.UserKey(h, iq.From)
		op := storage.Put(Table, owner, b)
		if len(p.Nodes) == 0 {
			op = storage.Delete(Table, owner)
		}
		if err := h.Store().Apply(ctx, op); err != nil {
			modutil.ReplyStoreError(ctx, h, iq, "vcard set", err)
			return
		}
		modutil.ReplyResult(ctx, h, iq)
		m.toPEP(ctx, h, owner, p) // XEP-0398 (avatar.go)
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
	}
}

// Get returns user's stored vCard (user a module.UserKey), ok false when none
// is stored (xmppctl get_vcard).
func (m *Module) Get(user string) (v *xmlstream.Element, ok bool, err error) {
	b, ok, err := m.tab.Get(user)
	if err != nil || !ok {
		return nil, false, err
	}
	if v, err = modutil.Decode(b); err != nil {
		return nil, false, fmt.Errorf("vcard: stored vCard of %s: %w", user, err)
	}
	return v, true, nil
}

// Put stores v as user's vCard (xmppctl set_vcard), within the size limit.
func (m *Module) Put(ctx context.Context, user string, v *xmlstream.Element) error {
	b := modutil.Encode(v)
	if len(b) > m.max {
		return fmt.Errorf("vcard: larger than %d bytes", m.max)
	}
	if err := m.st.Apply(ctx, storage.Put(Table, user, b)); err != nil {
		return fmt.Errorf("vcard: store %s: %w", user, err)
	}
	return nil
}
