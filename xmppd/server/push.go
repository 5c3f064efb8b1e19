package server

import "xedge/xmppd/mod/push"

// Push notifications (XEP-0357): the settings of the push module (mod/push,
// registered in mod/all) from config push-include-body / push-include-sender.

func init() { registerFeature(Feature{Name: "push", Build: buildPush}) }

func buildPush(s *Server) ([]StagedComponent, error) {
	for _, m := range s.Modules {
		if pm, ok := m.(*push.Module); ok {
			pm.Configure(push.Config{IncludeBody: s.cfg.Push.IncludeBody, NoSender: !s.cfg.Push.IncludeSender})
		}
	}
	return nil, nil
}
