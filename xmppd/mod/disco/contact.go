package disco

import (
	"sort"

	"xedge/xmppd/xmlstream"
)

// Contact addresses (XEP-0157) in the server's disco#info, as an extended
// information form (XEP-0128) of FORM_TYPE NSServerInfo.

// NSServerInfo is the FORM_TYPE of the contact addresses form.
const NSServerInfo = "http://jabber.org/network/serverinfo"

const nsData = "jabber:x:data"

// ContactVars are the XEP-0157 field vars, in the order the form lists them.
var ContactVars = []string{"abuse-addresses", "admin-addresses", "feedback-addresses",
	"sales-addresses", "security-addresses", "support-addresses"}

// SetContactAddresses sets the addresses by field var (abuse-addresses,
// admin-addresses, ...; other vars are ignored). Nil or empty removes the form.
func (m *Module) SetContactAddresses(addrs map[string][]string) {
	var x *xmlstream.Element
	known := map[string]bool{}
	for _, v := range ContactVars {
		known[v] = true
	}
	vars := make([]string, 0, len(addrs))
	for v, l := range addrs {
		if known[v] && len(l) > 0 {
			vars = append(vars, v)
		}
	}
	sort.Strings(vars)
	if len(vars) > 0 {
		x = xmlstream.New(nsData, "x", "type", "result")
		x.Append(xmlstream.New(nsData, "field", "var", "FORM_TYPE", "type", "hidden").
			Append(xmlstream.New(nsData, "value").AppendText(NSServerInfo)))
		for _, v := range vars {
			f := xmlstream.New(nsData, "field", "var", v, "type", "list-multi")
			for _, a := range addrs[v] {
				f.Append(xmlstream.New(nsData, "value").AppendText(a))
			}
			x.Append(f)
		}
	}
	m.contactMu.Lock()
	m.contact = x
	m.contactMu.Unlock()
}

// contactForm returns a copy of the contact addresses form, or nil.
func (m *Module) contactForm() *xmlstream.Element {
	m.contactMu.RLock()
	defer m.contactMu.RUnlock()
	if m.contact == nil {
		return nil
	}
	return m.contact.Copy()
}
