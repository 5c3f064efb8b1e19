package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/router"
	"xedge/xmppd/version"
)

// Status is the result of `xmppctl status`.
type Status struct {
	Version   string      `json:"version"`
	Uptime    string      `json:"uptime"`
	Domain    string      `json:"domain"`
	Hosts     []string    `json:"hosts"`
	Node      string      `json:"node"`
	Listeners []string    `json:"listeners"`
	Sessions  int         `json:"sessions"`
	Storage   StorageView `json:"storage"`
	LogLevel  string      `json:"log_level"`
}

func (s *Server) adminHandlers() {
	a := s.Admin
	a.Handle("register", func(ctx context.Context, args []string) (any, error) {
		args, host, err := s.hostForm(args, 2, 1) // USER PASSWORD or ejabberdctl's USER HOST PASSWORD
		if err != nil {
			return nil, err
		}
		u, d, err := s.account(args[0], host)
		if err != nil {
			return nil, err
		}
		if err := s.hostDir(d).Create(ctx, u, args[1]); err != nil {
			return nil, s.hostDirErr(d, "registering an account", err)
		}
		return fmt.Sprintf("user %s@%s registered", u, d), nil
	})
	a.Handle("unregister", func(ctx context.Context, args []string) (any, error) {
		args, host, err := s.hostForm(args, 1, 1) // USER or USER HOST
		if err != nil {
			return nil, err
		}
		u, d, err := s.account(args[0], host)
		if err != nil {
			return nil, err
		}
		if err := s.hostDir(d).Delete(ctx, u); err != nil {
			return nil, s.hostDirErr(d, "removing an account", err)
		}
		bare, _ := jid.New(u, d, "")
		s.Router.Kick(bare, "account removed")
		return fmt.Sprintf("user %s@%s removed", u, d), nil
	})
	passwd := func(ctx context.Context, args []string) (any, error) {
		args, host, err := s.hostForm(args, 2, 1) // USER PASSWORD or USER HOST PASSWORD
		if err != nil {
			return nil, err
		}
		u, d, err := s.account(args[0], host)
		if err != nil {
			return nil, err
		}
		if err := s.hostDir(d).SetPassword(ctx, u, args[1]); err != nil {
			return nil, s.hostDirErr(d, "changing a password", err)
		}
		return fmt.Sprintf("password of %s@%s changed", u, d), nil
	}
	a.Handle("passwd", passwd)
	a.Handle("change_password", passwd)
	users := func(ctx context.Context, args []string) (any, error) {
		_, host, err := s.hostForm(args, 0, 0)
		if err != nil {
			return nil, err
		}
		var l []string
		if host == "" { // every host's users (user@host for all but the default host)
			l, err = s.userDir().List(ctx)
		} else {
			l, err = s.hostDir(host).List(ctx)
		}
		if err != nil {
			return nil, s.hostDirErr(host, "listing the accounts", err)
		}
		if l == nil {
			l = []string{}
		}
		return l, nil
	}
	a.Handle("users", users)
	a.Handle("registered_users", users) // ejabberdctl registered_users HOST
	a.Handle("sessions", func(context.Context, []string) (any, error) { return sessionInfos(s.Router.All()), nil })
	a.Handle("kick", func(_ context.Context, args []string) (any, error) {
		j, err := jid.Parse(args[0])
		if err != nil || j.Local == "" {
			return nil, fmt.Errorf("invalid JID %q", args[0])
		}
		if _, err := s.servedHost(j.Domain); err != nil {
			return nil, err
		}
		n, err := s.Router.Kick(j, "Kicked by the administrator")
		if errors.Is(err, router.ErrNoSession) {
			return nil, fmt.Errorf("no session for %s", j)
		}
		return fmt.Sprintf("kicked %d session(s) of %s", n, j), err
	})
	a.Handle("status", func(context.Context, []string) (any, error) {
		return Status{
			Version: version.Version, Uptime: time.Since(s.started).Round(time.Second).String(),
			Domain: s.cfg.Domain, Hosts: s.cfg.HostNames(), Node: s.cfg.Node, Listeners: append(append(s.C2S.Addrs(), s.opsListeners()...), "admin "+s.cfg.AdminSocket),
			Sessions: s.Router.Count(), Storage: s.storageView(), LogLevel: strings.ToLower(s.level.Level().String()),
		}, nil
	})
	a.Handle("loglevel", func(_ context.Context, args []string) (any, error) {
		if len(args) == 0 || (len(args) == 1 && args[0] == "get") {
			return strings.ToLower(s.level.Level().String()), nil
		}
		if args[0] != "set" || len(args) != 2 {
			return nil, errors.New("usage: loglevel [get|set LEVEL]")
		}
		if err := s.SetLogLevel(args[1]); err != nil {
			return nil, err
		}
		return strings.ToLower(s.level.Level().String()), nil
	})
	a.Handle("tables", func(context.Context, []string) (any, error) { return s.Store.Tables(), nil })
	a.Handle("storage", func(context.Context, []string) (any, error) { return s.storageView(), nil })
	s.ejabberdctlHandlers()
	s.hostHandlers()
}

// StorageView is the result of `xmppctl storage` (and the storage part of
// `status`): the store's storage.Status, plus, on a cluster node, this node's
// cluster address and the replica state of every node (the same map `tables`
// shows per durable table: "voter|nonvoter|witness/durable|ram-only[/leader]").
type StorageView struct {
	storage.Status
	ClusterAddr string            `json:"cluster_addr,omitempty"`
	Replicas    map[string]string `json:"replicas,omitempty"`
}

func (s *Server) storageView() StorageView {
	v := StorageView{Status: s.Store.Status()}
	if s.cfg.Clustered() {
		v.ClusterAddr = s.cfg.ClusterAddr
		if s.cfg.AdvertiseAddr != "" {
			v.ClusterAddr = s.cfg.AdvertiseAddr
		}
		v.Replicas = replicas(s.Store)
	}
	return v
}

// SetLogLevel changes the runtime log level (debug, info, warn, error).
func (s *Server) SetLogLevel(l string) error {
	var lv slogLevel
	if err := lv.parse(l); err != nil {
		return err
	}
	s.level.Set(lv.l)
	return nil
}

// sessionInfos describes sessions for the admin commands.
func sessionInfos(l []module.Session) []router.SessionInfo {
	out := []router.SessionInfo{}
	for _, ss := range l {
		if d, ok := ss.(router.Describer); ok {
			out = append(out, d.Info())
		} else {
			out = append(out, router.SessionInfo{JID: ss.JID().String(), ID: ss.ID()})
		}
	}
	return out
}
