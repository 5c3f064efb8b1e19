package server

import "xedge/xmppd/mod/mam"

// The message archive's retention caps (mam-max, mam-ram-max; docs/mam.md) are
// handed to the mam module before the modules start.

func init() { registerFeature(Feature{Name: "mam limits", Build: buildMAM}) }

func buildMAM(s *Server) ([]StagedComponent, error) {
	for _, m := range s.Modules {
		if a, ok := m.(*mam.Module); ok {
			a.SetLimits(s.cfg.MAM.Max, s.cfg.MAM.RAMMax)
		}
	}
	return nil, nil
}
