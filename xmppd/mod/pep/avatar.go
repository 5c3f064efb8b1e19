package pep

import (
	"context"
	"encoding/json"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/avatar"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Avatar conversion, the PEP side (XEP-0398): when an account publishes its
// avatar metadata (urn:xmpp:avatar:metadata) describing an image it published to
// urn:xmpp:avatar:data, the image becomes the PHOTO of its vCard, through a
// vcard-temp set routed from the account's bare JID to itself (the vCard module
// stores it and puts the new hash into the account's next presence, XEP-0153).
// Nothing is written when the vCard's photo already has that hash (the vCard
// module converts the other way and ends up here, too). Empty metadata (avatar
// disabled) removes the vCard's photo; metadata naming only hosted images (url)
// or an image whose data node does not hold it changes nothing.
//
// The vCard table is read by name (vcardTable); the module does not import vcard.

// vcardTable is the vCard module's table (read only).
const vcardTable = "vcard"

// avatarToVCard converts the metadata item stored just now for owner.
func (m *Module) avatarToVCard(ctx context.Context, h module.Host, owner jid.JID, stored *xmlstream.Element) {
	meta := stored.Child(avatar.NodeMeta, "metadata")
	if meta == nil {
		return
	}
	vt, err := h.Store().Durable(vcardTable)
	if err != nil {
		return // no vCard module
	}
	var vc *xmlstream.Element
	if b, ok, _ := vt.Get(m.uk(owner)); ok {
		if vc, err = modutil.Decode(b); err != nil {
			return
		}
	}
	cur, hasPhoto := avatar.PhotoOf(vc)
	bare := owner.Bare().String()
	info := avatar.Info(meta)
	if info == nil {
		if len(meta.Children()) == 0 && hasPhoto { // <metadata/>: no avatar
			h.Logger().Info("avatar: PEP avatar disabled; vCard photo removed (XEP-0398)", "user", owner.String())
			h.Route(ctx, avatar.SelfIQ(bare, "vcard-none", avatar.WithPhoto(vc, "", "")))
		}
		return
	}
	hash := info.Attr("id")
	if hasPhoto && cur.Hash == hash {
		return
	}
	raw, ok, _ := m.items.Get(itemPrefix(m.uk(owner), avatar.NodeData) + hash)
	if !ok {
		h.Logger().Debug("avatar: metadata names an image not in the data node", "user", owner.String(), "hash", hash)
		return
	}
	var si storedItem
	if json.Unmarshal(raw, &si) != nil {
		return
	}
	it, err := modutil.Decode(si.Item)
	if err != nil {
		return
	}
	img, ok := avatar.Decode(it.ChildText(avatar.NodeData, "data"))
	if !ok || avatar.Hash(img) != hash {
		h.Logger().Debug("avatar: data item does not hash to its metadata id", "user", owner.String(), "hash", hash)
		return
	}
	typ := info.Attr("type")
	if typ == "" {
		typ = "image/png"
	}
	p := avatar.Photo{Type: typ, Data: img, Hash: hash}
	p.Base64 = avatar.PublishDataBase64(img)
	h.Logger().Info("avatar: PEP avatar stored as the vCard photo (XEP-0398)", "user", owner.String(), "hash", hash)
	h.Route(ctx, avatar.SelfIQ(bare, "vcard-"+hash[:8], avatar.WithPhoto(vc, p.Type, p.Base64)))
}
