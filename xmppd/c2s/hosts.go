package c2s

import (
	"context"
	"crypto/tls"
	"fmt"

	"xedge/xmppd/accounts"
	"xedge/xmppd/module"
)

// Host is one served domain as client streams see it (virtual hosting): the
// stream header's to (or, before it, the TLS SNI name) selects it, and SASL,
// binding and in-band registration then use its accounts, backend and policy.
type Host struct {
	Domain   string
	Accounts *accounts.Accounts // the host's users (accounts.ForHost); nil: the server's accounts' view of Domain
	Authn    Authenticator      // the host's authentication backend; nil: Accounts
	Register string             // in-band registration policy (RegisterAllow...); "": the server's (SetRegistration)
	Cert     *tls.Certificate   // the certificate offered for Domain (by SNI); nil: Config.TLS's
}

// hostState is a Host with what Start derived from it.
type hostState struct {
	Host
	srv *Server
	def bool        // the default host: SetAuthenticator and SetRegistration apply to it
	tls *tls.Config // offered when the client names no (or an unknown) SNI host
}

// SetHosts sets the served domains (before Start). Without a call the server
// serves Config.Domain alone with the accounts given to New, the
// Authenticator of SetAuthenticator and the policy of SetRegistration. The
// default host (Config.Domain) must be among hosts.
func (s *Server) SetHosts(hosts []Host) error {
	found := false
	for _, h := range hosts {
		if h.Register != "" && h.Register != RegisterAllow && h.Register != RegisterDeny && h.Register != RegisterLoopback {
			return fmt.Errorf("c2s: host %s: registration policy %q: want allow, deny or loopback", h.Domain, h.Register)
		}
		found = found || h.Domain == s.cfg.Domain
	}
	if !found {
		return fmt.Errorf("c2s: the default host %s is not among the hosts", s.cfg.Domain)
	}
	s.hostList = append([]Host(nil), hosts...)
	return nil
}

// initHosts builds the host table from SetHosts (or the default host alone) and
// the TLS configuration of each: the certificate is chosen by the client's SNI
// name when it names a served host, else the stream's host's (known for
// STARTTLS: the header came first), else Config.TLS's.
func (s *Server) initHosts() {
	list := s.hostList
	if len(list) == 0 {
		list = []Host{{Domain: s.cfg.Domain}}
	}
	s.hosts = map[string]*hostState{}
	byName := map[string]*tls.Certificate{}
	for _, h := range list {
		if h.Cert != nil {
			byName[h.Domain] = h.Cert
		}
	}
	sni := func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return byName[hello.ServerName], nil // nil: Certificates[0]
	}
	for _, h := range list {
		hs := &hostState{Host: h, srv: s, def: h.Domain == s.cfg.Domain, tls: s.cfg.TLS}
		if hs.Accounts == nil {
			hs.Accounts = s.accounts.ForHost(h.Domain)
		}
		if len(byName) > 0 && s.cfg.TLS != nil {
			c := s.cfg.TLS.Clone()
			if h.Cert != nil {
				c.Certificates = []tls.Certificate{*h.Cert}
			}
			c.GetCertificate = sni
			hs.tls = c
		}
		s.hosts[h.Domain] = hs
	}
}

// host returns the state of a served domain, nil if it is not served.
func (s *Server) host(domain string) *hostState {
	s.hostsOnce.Do(s.initHosts)
	return s.hosts[domain]
}

// authn is the host's authentication backend, nil for the accounts table.
func (h *hostState) authn() Authenticator {
	if h.Authn == nil && h.def {
		return h.srv.authn
	}
	return h.Authn
}

// users is the host's user database for SASL, binding and registration.
func (h *hostState) users() module.Accounts {
	if a := h.authn(); a != nil {
		return a
	}
	return h.Accounts
}

// boundUserExists is bind's check that the account still exists. A backend
// other than internal answered the authentication moments ago and is the
// authority (scripts written for ejabberd often answer isuser poorly), so only
// the accounts table is asked again.
func (h *hostState) boundUserExists(ctx context.Context, user string) (bool, error) {
	if a := h.authn(); a != nil && a.Method() != "internal" {
		return true, nil
	}
	return h.users().Exists(ctx, user)
}

// hostOf returns the host of c's stream (the default host until a header or
// the SNI name chose another).
func (c *conn) hostOf() *hostState {
	if c.vhost == nil {
		c.vhost = c.srv.host(c.srv.cfg.Domain)
	}
	return c.vhost
}
