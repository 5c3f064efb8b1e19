// Package avatar holds what the vCard and PEP modules share to convert avatars
// between vcard-temp (XEP-0054 PHOTO, XEP-0153 presence hashes) and PEP user
// avatars (XEP-0084), as XEP-0398 describes: the hash both use (SHA-1 of the
// image bytes, hex), reading a vCard's PHOTO, and building the IQs a module
// routes from an account's bare JID to itself so that the other module stores
// the converted avatar through its own protocol handler.
//
// It must not import the xmppd core or any module.
package avatar

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"

	"xedge/xmppd/xmlstream"
)

// Namespaces and nodes.
const (
	NSVCard  = "vcard-temp"
	NSUpdate = "vcard-temp:x:update"
	NSPubsub = "http://jabber.org/protocol/pubsub"
	NodeData = "urn:xmpp:avatar:data"
	NodeMeta = "urn:xmpp:avatar:metadata"
)

// IDPrefix starts the id of every conversion IQ (their replies go to the
// account's bare JID and are dropped there).
const IDPrefix = "avatar-conv-"

// Hash is the avatar hash of XEP-0084 and XEP-0153: SHA-1 of the image, hex.
func Hash(img []byte) string {
	s := sha1.Sum(img)
	return hex.EncodeToString(s[:])
}

// Decode decodes base64 as vCards and PEP carry it (line breaks and blanks
// allowed, padding optional).
func Decode(b64 string) ([]byte, bool) {
	s := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, b64)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "=")); err != nil {
			return nil, false
		}
	}
	return b, len(b) > 0
}

// PublishDataBase64 is the base64 encoding of img as it is stored.
func PublishDataBase64(img []byte) string { return base64.StdEncoding.EncodeToString(img) }

// Photo is a vCard's embedded photo.
type Photo struct {
	Type   string // MIME type (TYPE), "image/png" when absent
	Data   []byte
	Base64 string // the canonical encoding of Data
	Hash   string
}

// PhotoOf returns the vCard's embedded PHOTO (BINVAL), if it has one.
func PhotoOf(vcard *xmlstream.Element) (Photo, bool) {
	if vcard == nil {
		return Photo{}, false
	}
	p := vcard.Child("", "PHOTO")
	if p == nil {
		return Photo{}, false
	}
	data, ok := Decode(p.ChildText("", "BINVAL"))
	if !ok {
		return Photo{}, false
	}
	typ := strings.TrimSpace(p.ChildText("", "TYPE"))
	if typ == "" {
		typ = "image/png"
	}
	return Photo{Type: typ, Data: data, Base64: base64.StdEncoding.EncodeToString(data), Hash: Hash(data)}, true
}

// WithPhoto returns a copy of vcard (nil: an empty vCard) whose PHOTO is
// replaced by typ and b64 (no PHOTO at all when b64 is "").
func WithPhoto(vcard *xmlstream.Element, typ, b64 string) *xmlstream.Element {
	var v *xmlstream.Element
	if vcard == nil {
		v = xmlstream.New(NSVCard, "vCard")
	} else {
		v = vcard.Copy()
	}
	v.RemoveChildren("", "PHOTO")
	if b64 != "" {
		v.Append(xmlstream.New(NSVCard, "PHOTO").Append(
			xmlstream.New(NSVCard, "TYPE").AppendText(typ),
			xmlstream.New(NSVCard, "BINVAL").AppendText(b64)))
	}
	return v
}

// SelfIQ returns an IQ set from an account's bare JID to itself with payload.
func SelfIQ(bare, id string, payload *xmlstream.Element) *xmlstream.Element {
	return xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "from", bare, "to", bare, "id", IDPrefix+id).Append(payload)
}

// PublishData returns the pubsub payload publishing photo p to the avatar data node.
func PublishData(p Photo) *xmlstream.Element {
	return xmlstream.New(NSPubsub, "pubsub").Append(xmlstream.New(NSPubsub, "publish", "node", NodeData).Append(
		xmlstream.New(NSPubsub, "item", "id", p.Hash).Append(xmlstream.New(NodeData, "data").AppendText(p.Base64))))
}

// PublishMeta returns the pubsub payload publishing p's metadata (an empty
// <metadata/>, "no avatar", for a zero p).
func PublishMeta(p Photo) *xmlstream.Element {
	meta := xmlstream.New(NodeMeta, "metadata")
	id := "current"
	if p.Hash != "" {
		id = p.Hash
		meta.Append(xmlstream.New(NodeMeta, "info", "id", p.Hash, "bytes", strconv.Itoa(len(p.Data)), "type", p.Type))
	}
	return xmlstream.New(NSPubsub, "pubsub").Append(xmlstream.New(NSPubsub, "publish", "node", NodeMeta).Append(
		xmlstream.New(NSPubsub, "item", "id", id).Append(meta)))
}

// Info returns the <info/> of a metadata payload that describes an image stored
// in PEP (no url), or nil (no avatar, or only hosted ones).
func Info(meta *xmlstream.Element) *xmlstream.Element {
	if meta == nil {
		return nil
	}
	for _, c := range meta.Children() {
		if c.Local == "info" && c.Attr("url") == "" && c.Attr("id") != "" {
			return c
		}
	}
	return nil
}
