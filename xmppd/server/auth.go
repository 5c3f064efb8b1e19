package server

import (
	"context"

	"xedge/xmppd/auth"
	"xedge/xmppd/module"
)

// The authentication backend feature (xmppd/auth): with auth-method external,
// sql or ldap, SASL in c2s and the router's "does this user exist" ask that
// backend instead of the users table. With internal (the default) nothing
// changes: c2s and the router use the accounts table directly. With
// sasl-channel-binding tls-exporter, c2s offers SCRAM-SHA-*-PLUS.

func init() { registerFeature(Feature{Name: "auth", Build: buildAuth}) }

func buildAuth(s *Server) ([]StagedComponent, error) {
	a := s.cfg.Auth
	s.C2S.SetChannelBinding(a.ChannelBinding == "tls-exporter")
	if a.Method == "" || a.Method == auth.Internal {
		return nil, nil
	}
	svc, err := auth.New(auth.Config{
		Method: a.Method, CacheTime: a.CacheTime, Timeout: a.Timeout,
		External: auth.ExternalConfig{Program: a.ExtauthProgram, PoolSize: a.ExtauthPoolSize, Timeout: a.ExtauthTimeout},
		SQL: auth.SQLConfig{URL: a.SQLURL, PasswordQuery: a.SQLPasswordQuery, Format: a.PasswordFormat,
			SCRAMHash: a.SCRAMHash, PoolSize: a.SQLPoolSize},
		LDAP: auth.LDAPConfig{Servers: a.LDAPServers, Port: a.LDAPPort, Encrypt: a.LDAPEncrypt, TLSVerify: a.LDAPTLSVerify,
			CAFile: a.LDAPCAFile, RootDN: a.LDAPRootDN, Password: a.LDAPPassword, Base: a.LDAPBase, UIDs: a.LDAPUIDs,
			Filter: a.LDAPFilter},
	}, s.cfg.Domain, s.Accounts, func(ctx context.Context, user string) {
		s.Router.Run(ctx, module.EvUserRemoved, &module.EventData{User: user})
	}, s.log)
	if err != nil {
		return nil, err
	}
	s.Router.SetAccounts(svc)
	s.C2S.SetAuthenticator(svc)
	return []StagedComponent{{Stage: AfterModules, Name: "auth " + a.Method, Start: svc.Start, Stop: svc.Stop}}, nil
}
