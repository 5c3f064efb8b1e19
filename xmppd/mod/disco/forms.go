package disco

import "xedge/xmppd/xmlstream"

// Forms returns copies of the extended information forms (XEP-0128) the server's
// disco#info carries, so the entity-capabilities hash of the server (XEP-0115 §5.1,
// xmppd/c2s) covers them too.
func (m *Module) Forms() []*xmlstream.Element {
	if x := m.contactForm(); x != nil {
		return []*xmlstream.Element{x}
	}
	return nil
}
