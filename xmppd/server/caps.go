package server

import "xedge/xmppd/mod/disco"

// Entity capabilities (XEP-0115): the ver the c2s streams advertise hashes the
// extended forms (XEP-0128) of the server's disco#info as well, e.g. the contact
// addresses (contact.go).

func init() { registerFeature(Feature{Name: "caps forms", Build: buildCapsForms}) }

func buildCapsForms(s *Server) ([]StagedComponent, error) {
	for _, m := range s.Modules {
		if dm, ok := m.(*disco.Module); ok {
			s.C2S.SetDiscoForms(dm.Forms)
		}
	}
	return nil, nil
}
