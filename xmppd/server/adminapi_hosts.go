package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"xedge/xmppd/accounts"
	"xedge/xmppd/auth"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
)

// Virtual hosts in the admin commands: where ejabberdctl takes a HOST, xmppctl
// takes it too and acts on that host's accounts and sessions; a domain this
// cluster does not serve is refused with "unknown host". xmppctl's own forms
// without a HOST act on the default host (domain), or on the host of a USER
// written as user@host.

// servedHost prepares a domain argument and checks it is served.
func (s *Server) servedHost(host string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(host), "."))
	if j, err := jid.New("", d, ""); err == nil {
		d = j.Domain
	}
	if d == "" || !s.cfg.IsHost(d) {
		return "", fmt.Errorf("unknown host: host %q is not served here (served: %s)", host, strings.Join(s.cfg.HostNames(), ", "))
	}
	return d, nil
}

// account resolves a USER argument (a localpart, or user@host when host is
// "") and a HOST argument ("": the default host) into a prepared localpart
// and its served host.
func (s *Server) account(user, host string) (local, domain string, err error) {
	if host == "" {
		host = s.cfg.Domain
		if l, d, ok := strings.Cut(user, "@"); ok {
			user, host = l, d
		}
	}
	if domain, err = s.servedHost(host); err != nil {
		return "", "", err
	}
	if local, err = s.adminUser(user); err != nil {
		return "", "", err
	}
	return local, domain, nil
}

// userKey is module.UserKey of local@domain.
func (s *Server) userKey(local, domain string) string {
	if domain == s.cfg.Domain {
		return local
	}
	return local + "@" + domain
}

// hostDir returns the accounts of a served host, named by localpart: the
// host's backend when the server has several (accounts.Hosts), the directory
// itself for the default host otherwise.
func (s *Server) hostDir(domain string) accounts.UserAccounts {
	d := s.userDir()
	if hs, ok := d.(interface {
		For(string) accounts.UserAccounts
	}); ok {
		if a := hs.For(domain); a != nil {
			return a
		}
	}
	if domain == s.cfg.Domain {
		return d
	}
	return s.Accounts.ForHost(domain)
}

// hostCheckPassword verifies local@domain's password against its host's backend.
func (s *Server) hostCheckPassword(ctx context.Context, local, domain, password string) (bool, error) {
	switch d := s.hostDir(domain).(type) {
	case *auth.Service:
		return d.CheckPassword(ctx, local, password)
	case *accounts.Accounts:
		_, ok, err := d.CheckPassword(local, password)
		return ok, err
	case interface {
		CheckPassword(ctx context.Context, user, password string) (bool, error)
	}:
		return d.CheckPassword(ctx, local, password)
	}
	_, ok, err := s.Accounts.ForHost(domain).CheckPassword(local, password)
	return ok, err
}

// sessionsAt lists the bound sessions of users at domain ("": every host).
func (s *Server) sessionsAt(domain string) []module.Session {
	all := s.Router.All()
	if domain == "" {
		return all
	}
	out := all[:0:0]
	for _, ss := range all {
		if ss.JID().Domain == domain {
			out = append(out, ss)
		}
	}
	return out
}

// HostView is one served domain in `xmppctl registered_vhosts --json` and status.
type HostView struct {
	Host     string `json:"host"`
	Default  bool   `json:"default,omitempty"`
	Sessions int    `json:"sessions"`
	Auth     string `json:"auth"`
	Register string `json:"register"`
	MUC      string `json:"muc"`
	Upload   string `json:"upload,omitempty"`
}

// hostViews describes every served domain.
func (s *Server) hostViews() []HostView {
	count := map[string]int{}
	for _, ss := range s.Router.All() {
		count[ss.JID().Domain]++
	}
	var out []HostView
	for _, d := range s.cfg.HostNames() {
		hc, _ := s.cfg.Host(d)
		v := HostView{Host: d, Default: d == s.cfg.Domain, Sessions: count[d], Auth: hc.Auth.Method, Register: hc.Register, MUC: hc.MUCDomain}
		if v.Auth == "" {
			v.Auth = auth.Internal
		}
		if s.cfg.Upload.Dir != "" {
			v.Upload = hc.UploadDomain
		}
		out = append(out, v)
	}
	return out
}

func (s *Server) hostHandlers() {
	a := s.Admin
	a.Handle("registered_vhosts", func(_ context.Context, args []string) (any, error) {
		if len(args) != 0 {
			return nil, fmt.Errorf("usage: registered_vhosts")
		}
		return s.cfg.HostNames(), nil
	})
	a.Handle("vhosts", func(context.Context, []string) (any, error) { return s.hostViews(), nil })
	a.Handle("connected_users_vhost", func(_ context.Context, args []string) (any, error) {
		if len(args) != 1 {
			return nil, fmt.Errorf("usage: connected_users_vhost HOST")
		}
		d, err := s.servedHost(args[0])
		if err != nil {
			return nil, err
		}
		out := []string{}
		for _, ss := range s.sessionsAt(d) {
			out = append(out, ss.JID().String())
		}
		sort.Strings(out)
		return out, nil
	})
	a.Handle("stats_host", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 2 {
			return nil, fmt.Errorf("usage: stats_host registeredusers|onlineusers HOST")
		}
		return s.stat(ctx, args[0], args[1])
	})
}

func (s *Server) uptimeSeconds() int64 { return int64(time.Since(s.started).Seconds()) }

// stat is one figure of ejabberdctl's stats and stats_host, for host ("": every host).
func (s *Server) stat(ctx context.Context, name, host string) (any, error) {
	domain := ""
	if host != "" {
		d, err := s.servedHost(host)
		if err != nil {
			return nil, err
		}
		domain = d
	}
	switch name {
	case "registeredusers":
		var l []string
		var err error
		if domain == "" {
			l, err = s.userDir().List(ctx)
		} else {
			l, err = s.hostDir(domain).List(ctx)
		}
		if err != nil {
			return nil, s.hostDirErr(domain, "counting the accounts", err)
		}
		return len(l), nil
	case "onlineusers", "onlineusersnode":
		return len(s.sessionsAt(domain)), nil
	case "uptimeseconds":
		return s.uptimeSeconds(), nil
	}
	return nil, fmt.Errorf("unknown statistic %q: registeredusers, onlineusers, onlineusersnode or uptimeseconds", name)
}
