package server

// In-band registration policy per listener (XEP-0077, config register): the c2s
// listeners offer registration by the policy in force (allow, deny, or loopback:
// only listeners bound to a loopback address).

func init() { registerFeature(Feature{Name: "registration policy", Build: buildRegisterPolicy}) }

func buildRegisterPolicy(s *Server) ([]StagedComponent, error) {
	return nil, s.C2S.SetRegistration(s.cfg.EffectiveRegister())
}
