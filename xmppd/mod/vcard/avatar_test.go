package vcard_test

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"xedge/xmppd/mod/internal/avatar"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/mod/pep"
	"xedge/xmppd/mod/vcard"
	"xedge/xmppd/xmlstream"
)

var img = []byte("\x89PNG\r\n\x1a\nnot really a png, but bytes all the same")

func setup(t *testing.T) (*modtest.Host, *modtest.Session) {
	t.Helper()
	h := modtest.NewHost("example.org", "alice", "bob")
	if err := pep.New(nil).Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if err := vcard.New(0).Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	return h, h.Connect("alice@example.org/a")
}

func iq(typ string, payload *xmlstream.Element) *xmlstream.Element {
	return xmlstream.New(xmlstream.NSClient, "iq", "type", typ, "id", "q").Append(payload)
}

func result(t *testing.T, s *modtest.Session) *xmlstream.Element {
	t.Helper()
	for _, st := range s.Take() {
		if st.Local == "iq" && st.Attr("id") == "q" {
			if st.Attr("type") != "result" {
				t.Fatalf("IQ failed: %v", st)
			}
			return st
		}
	}
	t.Fatal("no reply")
	return nil
}

func getVCard(t *testing.T, h *modtest.Host, s *modtest.Session) *xmlstream.Element {
	t.Helper()
	h.Send(s, iq("get", xmlstream.New(vcard.NS, "vCard")))
	return result(t, s).Child(vcard.NS, "vCard")
}

func pepItems(t *testing.T, h *modtest.Host, s *modtest.Session, node string) []*xmlstream.Element {
	t.Helper()
	h.Send(s, iq("get", xmlstream.New(pep.NS, "pubsub").Append(xmlstream.New(pep.NS, "items", "node", node))))
	r := result(t, s)
	return r.Child(pep.NS, "pubsub").Child(pep.NS, "items").Children()
}

// presence sends an available presence from s and returns it as the hooks left it.
func presence(h *modtest.Host, s *modtest.Session, x *xmlstream.Element) *xmlstream.Element {
	p := xmlstream.New(xmlstream.NSClient, "presence")
	if x != nil {
		p.Append(x)
	}
	h.Send(s, p)
	return p
}

func photoOf(p *xmlstream.Element) (string, bool) {
	x := p.Child(avatar.NSUpdate, "x")
	if x == nil || x.Child(avatar.NSUpdate, "photo") == nil {
		return "", false
	}
	return x.ChildText(avatar.NSUpdate, "photo"), true
}

func TestPEPAvatarBecomesVCardPhoto(t *testing.T) {
	h, a := setup(t)
	hash := avatar.Hash(img)
	// No vCard: presence is left as the client sent it.
	if _, ok := photoOf(presence(h, a, nil)); ok {
		t.Fatal("photo hash added without a vCard")
	}
	h.Send(a, iq("set", xmlstream.New(vcard.NS, "vCard").Append(xmlstream.New(vcard.NS, "FN").AppendText("Alice"))))
	result(t, a)
	if ph, ok := photoOf(presence(h, a, nil)); !ok || ph != "" {
		t.Fatalf("a vCard without photo: want an empty <photo/>, got %q %v", ph, ok)
	}

	p := avatar.Photo{Type: "image/png", Data: img, Base64: base64.StdEncoding.EncodeToString(img), Hash: hash}
	h.Send(a, iq("set", avatar.PublishData(p)))
	result(t, a)
	h.Send(a, iq("set", avatar.PublishMeta(p)))
	result(t, a)

	v := getVCard(t, h, a)
	got, ok := avatar.PhotoOf(v)
	if !ok || got.Hash != hash || got.Type != "image/png" {
		t.Fatalf("vCard after the PEP publish: %v", v)
	}
	if v.ChildText(vcard.NS, "FN") != "Alice" {
		t.Fatalf("the rest of the vCard was lost: %v", v)
	}
	// The client's stale hash is replaced by the current one.
	stale := xmlstream.New(avatar.NSUpdate, "x").Append(xmlstream.New(avatar.NSUpdate, "photo").AppendText("0000"))
	pr := presence(h, a, stale)
	if ph, _ := photoOf(pr); ph != hash || len(pr.Children()) != 1 {
		t.Fatalf("presence: %v", pr)
	}
	// The conversion did not publish back (one metadata item, the client's).
	if its := pepItems(t, h, a, avatar.NodeMeta); len(its) != 1 || its[0].Attr("id") != hash {
		t.Fatalf("metadata items %v", its)
	}

	// Avatar disabled: the vCard photo goes.
	h.Send(a, iq("set", avatar.PublishMeta(avatar.Photo{})))
	result(t, a)
	if _, ok := avatar.PhotoOf(getVCard(t, h, a)); ok {
		t.Fatal("vCard photo kept after the PEP avatar was disabled")
	}
}

func TestVCardPhotoBecomesPEPAvatar(t *testing.T) {
	h, a := setup(t)
	b64 := base64.StdEncoding.EncodeToString(img)
	// Wrapped base64, as vCard clients write it.
	wrapped := b64[:20] + "\n" + b64[20:]
	v := xmlstream.New(vcard.NS, "vCard").Append(xmlstream.New(vcard.NS, "PHOTO").Append(
		xmlstream.New(vcard.NS, "TYPE").AppendText("image/jpeg"), xmlstream.New(vcard.NS, "BINVAL").AppendText(wrapped)))
	h.Send(a, iq("set", v))
	result(t, a)
	hash := avatar.Hash(img)
	meta := pepItems(t, h, a, avatar.NodeMeta)
	if len(meta) != 1 || meta[0].Attr("id") != hash {
		t.Fatalf("metadata %v", meta)
	}
	info := avatar.Info(meta[0].Child(avatar.NodeMeta, "metadata"))
	if info == nil || info.Attr("type") != "image/jpeg" || info.Attr("bytes") != strconv.Itoa(len(img)) {
		t.Fatalf("info %v", meta[0])
	}
	data := pepItems(t, h, a, avatar.NodeData)
	if len(data) != 1 || data[0].Attr("id") != hash || strings.TrimSpace(data[0].ChildText(avatar.NodeData, "data")) != b64 {
		t.Fatalf("data %v", data)
	}
	// Setting the same vCard again publishes nothing new; the PEP conversion
	// back did not rewrite the vCard (its BINVAL is still the wrapped one).
	if got := getVCard(t, h, a).Child(vcard.NS, "PHOTO").ChildText(vcard.NS, "BINVAL"); got != wrapped {
		t.Fatalf("vCard rewritten by the round trip: %q", got)
	}
	if ph, _ := photoOf(presence(h, a, nil)); ph != hash {
		t.Fatalf("presence hash %q, want %q", ph, hash)
	}
}
