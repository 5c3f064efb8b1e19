package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"

	"xedge/xmppd/accounts"
	"xedge/xmppd/auth"
	"xedge/xmppd/c2s"
	"xedge/xmppd/config"
	"xedge/xmppd/module"
	"xedge/xmppd/tlscert"
)

// The authentication backend feature (xmppd/auth) and virtual hosts: with
// auth-method external, sql or ldap, SASL in c2s and the router's "does this
// user exist" ask that backend instead of the users table. With internal (the
// default) nothing changes: c2s and the router use the accounts table directly.
// With sasl-channel-binding tls-exporter, c2s offers SCRAM-SHA-*-PLUS.
//
// With several hosts (config hosts/host_config) every host gets its own
// backend instance (independent: one failing affects only its host), its
// accounts view (accounts.ForHost), registration policy and certificate (chosen
// by SNI; a host without certfile gets a self-signed one of its own); the
// router's accounts become accounts.Hosts, which names users by user key.

func init() { registerFeature(Feature{Name: "auth", Build: buildAuth}) }

// authConfig is the auth package's configuration of a host's settings.
func authConfig(a config.AuthConfig) auth.Config {
	return auth.Config{
		Method: a.Method, CacheTime: a.CacheTime, Timeout: a.Timeout,
		External: auth.ExternalConfig{Program: a.ExtauthProgram, PoolSize: a.ExtauthPoolSize, Timeout: a.ExtauthTimeout},
		SQL: auth.SQLConfig{URL: a.SQLURL, PasswordQuery: a.SQLPasswordQuery, Format: a.PasswordFormat,
			SCRAMHash: a.SCRAMHash, PoolSize: a.SQLPoolSize},
		LDAP: auth.LDAPConfig{Servers: a.LDAPServers, Port: a.LDAPPort, Encrypt: a.LDAPEncrypt, TLSVerify: a.LDAPTLSVerify,
			CAFile: a.LDAPCAFile, RootDN: a.LDAPRootDN, Password: a.LDAPPassword, Base: a.LDAPBase, UIDs: a.LDAPUIDs,
			Filter: a.LDAPFilter},
	}
}

func buildAuth(s *Server) ([]StagedComponent, error) {
	s.C2S.SetChannelBinding(s.cfg.Auth.ChannelBinding == "tls-exporter")
	hosts := s.cfg.HostNames()
	if len(hosts) == 1 {
		a := s.cfg.Auth
		if a.Method == "" || a.Method == auth.Internal {
			return nil, nil
		}
		svc, err := auth.New(authConfig(a), s.cfg.Domain, s.Accounts, func(ctx context.Context, user string) {
			s.Router.Run(ctx, module.EvUserRemoved, &module.EventData{User: user})
		}, s.log)
		if err != nil {
			return nil, err
		}
		s.Router.SetAccounts(svc)
		s.C2S.SetAuthenticator(svc)
		return []StagedComponent{{Stage: AfterModules, Name: "auth " + a.Method, Start: svc.Start, Stop: svc.Stop}}, nil
	}
	var comps []StagedComponent
	all := accounts.NewHosts(s.cfg.Domain)
	var ch []c2s.Host
	for _, d := range hosts {
		hc, _ := s.cfg.Host(d)
		acc := s.Accounts.ForHost(d)
		h := c2s.Host{Domain: d, Accounts: acc, Register: hc.Register}
		all.Set(d, acc)
		if m := hc.Auth.Method; m != "" && m != auth.Internal {
			d := d
			svc, err := auth.New(authConfig(hc.Auth), d, acc, func(ctx context.Context, user string) {
				if d != s.cfg.Domain {
					user += "@" + d
				}
				s.Router.Run(ctx, module.EvUserRemoved, &module.EventData{User: user})
			}, s.log.With("host", d))
			if err != nil {
				return nil, fmt.Errorf("host %s: %w", d, err)
			}
			h.Authn = svc
			all.Set(d, svc)
			comps = append(comps, StagedComponent{Stage: AfterModules, Name: "auth " + m + " of " + d, Start: svc.Start, Stop: svc.Stop})
		}
		cert, err := s.hostCert(d, hc)
		if err != nil {
			return nil, err
		}
		h.Cert = cert
		ch = append(ch, h)
	}
	s.Router.SetAccounts(all)
	if err := s.C2S.SetHosts(ch); err != nil {
		return nil, err
	}
	return comps, nil
}

// hostCert is the certificate c2s offers for host d: its certfile; nil (the
// default certificate) when it has none of its own; a self-signed one made for
// it when no certificate is configured at all (the default one is then
// self-signed for the default host).
func (s *Server) hostCert(d string, hc config.HostConfig) (*tls.Certificate, error) {
	certFile, keyFile := hc.Cert, hc.Key
	switch {
	case certFile == s.cfg.Cert && (certFile != "" || d == s.cfg.Domain):
		return nil, nil // the default certificate (it may name every host)
	case certFile == "": // no certificate configured at all
		var created bool
		var err error
		certFile, keyFile, created, err = tlscert.EnsureSelfSigned(filepath.Join(s.cfg.Data, "tls"), d)
		if err != nil {
			return nil, fmt.Errorf("host %s: %w", d, err)
		}
		if created {
			s.log.Info("made a self-signed TLS certificate", "component", "server", "host", d, "cert", certFile)
		}
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("host %s: certificate: %w", d, err)
	}
	return &c, nil
}
