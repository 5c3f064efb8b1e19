package server

import "fmt"

// Connection-level storm control of the client listeners (config_conncaps.go):
// the per-IP connection cap and each listener's named shaper, handed to c2s
// before it starts.

func init() { registerFeature(Feature{Name: "connection caps", Build: buildConnCaps}) }

func buildConnCaps(s *Server) ([]StagedComponent, error) {
	cc := s.cfg.ConnCaps
	exempt, err := cc.ExemptPrefixes()
	if err != nil {
		return nil, err
	}
	s.C2S.SetPerIPLimit(cc.MaxPerIP, exempt)
	for _, l := range []struct {
		addr, shaper string
		directTLS    bool
	}{{s.cfg.C2S, cc.C2S, false}, {s.cfg.C2STLS, cc.C2STLS, true}} {
		rate, ok, err := cc.ListenerRate(l.shaper)
		if err != nil {
			return nil, err
		}
		if !ok || l.addr == "" || s.cfg.Witness {
			continue
		}
		if err := s.C2S.SetListenerShaper(l.addr, l.directTLS, rate); err != nil {
			return nil, fmt.Errorf("shaper %s: %w", l.shaper, err)
		}
		s.log.Info("listener shaper", "component", "c2s", "listener", l.addr, "direct_tls", l.directTLS, "shaper", l.shaper, "bytes_per_second", rate)
	}
	return nil, nil
}
