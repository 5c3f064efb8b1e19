package vcard

import (
	"context"
	"hash/fnv"
	"strings"
	"sync"

	"xedge/xmppd/mod/internal/avatar"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Avatar conversion, the vCard side (XEP-0398, XEP-0153):
//
//   - a vCard set with an embedded PHOTO is published as the account's PEP
//     avatar (XEP-0084: the image to urn:xmpp:avatar:data, then its metadata),
//     through IQs routed from the account's bare JID to itself, so the PEP module
//     stores and notifies as for a client's publish; nothing is published when
//     the PEP metadata already names the photo's hash (the PEP module converts
//     the other way and ends up here, too). A vCard without PHOTO leaves the PEP
//     avatar alone: many clients set a vCard for the nickname only.
//   - an available presence broadcast by one of the account's sessions carries
//     <x xmlns='vcard-temp:x:update'><photo>HASH</photo></x> with the hash of
//     the stored vCard's photo (an empty <photo/> for a vCard without one), in
//     place of whatever the client put there, so vCard-based clients see avatar
//     changes made through PEP. Accounts without a stored vCard are left as the
//     client sent them.
//
// The PEP table is read by name (pepItems); the module does not import pep.

// pepItems is the PEP module's item table (read only).
const pepItems = "pep_items"

// hashCacheMax bounds the per-node cache of photo hashes.
const hashCacheMax = 10000

type photoHash struct {
	sum  uint64 // FNV-1a of the stored vCard (the cache is valid while it matches)
	hash string // "" : the vCard has no photo
}

type hashCache struct {
	mu sync.Mutex
	m  map[string]photoHash
}

// toPEP publishes the photo of vcard, just stored for user, as the PEP avatar.
func (m *Module) toPEP(ctx context.Context, h module.Host, user string, vcard *xmlstream.Element) {
	p, ok := avatar.PhotoOf(vcard)
	if !ok {
		return
	}
	items, err := h.Store().Durable(pepItems)
	if err != nil {
		return // no PEP module
	}
	current := false
	_ = items.Scan(modutil.Key(user, avatar.NodeMeta)+modutil.Sep, func(k string, _ []byte) bool {
		current = strings.HasSuffix(k, modutil.Sep+p.Hash)
		return !current
	})
	if current {
		return
	}
	bare := module.UserJID(h, user).String()
	h.Logger().Info("avatar: vCard photo published as the PEP avatar (XEP-0398)", "user", user, "hash", p.Hash)
	h.Route(ctx, avatar.SelfIQ(bare, "data-"+p.Hash[:8], avatar.PublishData(p)))
	h.Route(ctx, avatar.SelfIQ(bare, "meta-"+p.Hash[:8], avatar.PublishMeta(p)))
}

// presenceHash puts the vCard photo's hash into an available presence a local
// session broadcasts (XEP-0153).
func (m *Module) presenceHash(_ context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || ev.Session == nil || st.Local != "presence" || st.Attr("type") != "" || st.Attr("to") != "" {
		return false
	}
	user := module.UserKey(h, ev.Session.JID())
	b, ok, err := m.tab.Get(user)
	if err != nil || !ok {
		return false
	}
	f := fnv.New64a()
	f.Write(b)
	sum := f.Sum64()
	m.hashes.mu.Lock()
	ph, hit := m.hashes.m[user]
	m.hashes.mu.Unlock()
	if !hit || ph.sum != sum {
		v, err := modutil.Decode(b)
		if err != nil {
			return false
		}
		ph = photoHash{sum: sum}
		if p, ok := avatar.PhotoOf(v); ok {
			ph.hash = p.Hash
		}
		m.hashes.mu.Lock()
		if m.hashes.m == nil || len(m.hashes.m) >= hashCacheMax {
			m.hashes.m = map[string]photoHash{}
		}
		m.hashes.m[user] = ph
		m.hashes.mu.Unlock()
	}
	st.RemoveChildren(avatar.NSUpdate, "x")
	photo := xmlstream.New(avatar.NSUpdate, "photo")
	if ph.hash != "" {
		photo.AppendText(ph.hash)
	}
	st.Append(xmlstream.New(avatar.NSUpdate, "x").Append(photo))
	return false
}
