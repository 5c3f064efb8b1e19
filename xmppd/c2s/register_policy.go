package c2s

import (
	"fmt"
	"net"
)

// Registration policies (SetRegistration), as ejabberd's register access rule
// names them.
const (
	RegisterAllow    = "allow"    // every listener
	RegisterDeny     = "deny"     // none
	RegisterLoopback = "loopback" // listeners bound to a loopback address only
)

// SetRegistration sets the in-band registration policy (before Start). Without
// a call, Config.AllowRegistration decides for every listener. With loopback, a
// listener bound to 127.0.0.0/8 or ::1 offers registration and any other one
// (a wildcard address included: it serves the network) does not; streams
// handed in through ServeConn (WebSocket) are offered it only with allow.
func (s *Server) SetRegistration(policy string) error {
	switch policy {
	case RegisterAllow, RegisterDeny, RegisterLoopback:
	default:
		return fmt.Errorf("c2s: registration policy %q: want allow, deny or loopback", policy)
	}
	s.mu.Lock()
	s.regPolicy = policy
	s.mu.Unlock()
	return nil
}

// registrationOn reports whether a stream of host h accepted on a listener
// bound to addr (nil: not one of ours) is offered in-band registration: the
// host's policy, else the server's.
func (s *Server) registrationOn(addr net.Addr, h *hostState) bool {
	p := ""
	if h != nil {
		p = h.Register
	}
	if p == "" {
		s.mu.Lock()
		p = s.regPolicy
		s.mu.Unlock()
	}
	switch p {
	case "":
		return s.cfg.AllowRegistration
	case RegisterAllow:
		return true
	case RegisterLoopback:
		ta, ok := addr.(*net.TCPAddr)
		return ok && ta.IP.IsLoopback()
	}
	return false
}
