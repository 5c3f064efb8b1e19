package server

import "xedge/xmppd/mod/disco"

// Contact addresses (XEP-0157): the contact-* settings become the serverinfo
// form of the server's disco#info (mod/disco).

func init() { registerFeature(Feature{Name: "contact addresses", Build: buildContact}) }

func buildContact(s *Server) ([]StagedComponent, error) {
	addrs := s.cfg.Contact.Addresses()
	if len(addrs) == 0 {
		return nil, nil
	}
	for _, m := range s.Modules {
		if dm, ok := m.(*disco.Module); ok {
			dm.SetContactAddresses(addrs)
		}
	}
	return nil, nil
}
