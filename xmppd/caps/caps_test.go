package caps

import (
	"testing"

	"xedge/xmppd/xmlstream"
)

func el(space, local string, attrs ...string) *xmlstream.Element {
	return xmlstream.New(space, local, attrs...)
}

// The complex example of XEP-0115 §5.3 (two identities in two languages, a
// software-information form), plus a form without FORM_TYPE that is ignored.
func TestVerOfTheXEPExample(t *testing.T) {
	const ns = "http://jabber.org/protocol/disco#info"
	q := el(ns, "query")
	q.Append(el(ns, "identity", "category", "client", "name", "Psi 0.11", "type", "pc").SetAttrNS(xmlstream.NSXML, "lang", "en"))
	q.Append(el(ns, "identity", "category", "client", "name", "Ψ 0.11", "type", "pc").SetAttrNS(xmlstream.NSXML, "lang", "el"))
	for _, f := range []string{"http://jabber.org/protocol/muc", "http://jabber.org/protocol/caps",
		"http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/disco#info"} {
		q.Append(el(ns, "feature", "var", f))
	}
	x := el(nsData, "x", "type", "result")
	field := func(v string, vals ...string) {
		f := el(nsData, "field", "var", v)
		for _, s := range vals {
			f.Append(el(nsData, "value").AppendText(s))
		}
		x.Append(f)
	}
	field("software_version", "0.11")
	field("os", "Mac")
	field("FORM_TYPE", "urn:xmpp:dataforms:softwareinfo")
	field("ip_version", "ipv6", "ipv4")
	field("software", "Psi")
	field("os_version", "10.5.1")
	q.Append(x)
	q.Append(el(nsData, "x", "type", "result").Append(el(nsData, "field", "var", "untyped").Append(el(nsData, "value").AppendText("1"))))
	if v := Ver(q); v != "q07IKJEyjvHSyhy//CH0CxmKi8w=" {
		t.Fatalf("ver %q, the XEP says q07IKJEyjvHSyhy//CH0CxmKi8w=", v)
	}
}
