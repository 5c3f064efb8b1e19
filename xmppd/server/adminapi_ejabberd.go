package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"xedge/xmppd/jid"
	"xedge/xmppd/router"
)

// ejabberdctl's argument forms, so an ejabberd operator's scripts keep
// working: every command that names an account takes USER HOST where xmppctl
// takes USER, and HOST must be the domain this node serves.

// hostForm accepts args in xmppctl's form (native arguments) or ejabberdctl's
// (a HOST inserted at index at), checks HOST and returns the native form and
// the host ("" in the native form).
func (s *Server) hostForm(args []string, native, at int) ([]string, string, error) {
	switch len(args) {
	case native:
		return args, "", nil
	case native + 1:
		host, err := s.servedHost(args[at])
		if err != nil {
			return nil, "", err
		}
		return append(append([]string(nil), args[:at]...), args[at+1:]...), host, nil
	}
	return nil, "", fmt.Errorf("want %d argument(s) (or %d with HOST, as ejabberdctl), got %d", native, native+1, len(args))
}

// MnesiaView is the result of `xmppctl mnesia` (ejabberdctl mnesia info):
// storage status and every table with its replicas.
type MnesiaView struct {
	Storage StorageView `json:"storage"`
	Tables  any         `json:"tables"`
}

func (s *Server) ejabberdctlHandlers() {
	a := s.Admin
	a.Handle("connected_users", func(context.Context, []string) (any, error) {
		out := []string{}
		for _, ss := range s.Router.All() {
			out = append(out, ss.JID().String())
		}
		sort.Strings(out)
		return out, nil
	})
	a.Handle("connected_users_number", func(context.Context, []string) (any, error) { return s.Router.Count(), nil })
	a.Handle("user_sessions_info", func(_ context.Context, args []string) (any, error) {
		if len(args) != 2 {
			return nil, errors.New("usage: user_sessions_info USER HOST")
		}
		host, err := s.servedHost(args[1])
		if err != nil {
			return nil, err
		}
		bare, err := jid.New(args[0], host, "")
		if err != nil {
			return nil, fmt.Errorf("invalid user %q: %w", args[0], err)
		}
		return sessionInfos(s.Router.Sessions(bare)), nil
	})
	a.Handle("kick_session", func(_ context.Context, args []string) (any, error) {
		if len(args) < 3 || len(args) > 4 {
			return nil, errors.New("usage: kick_session USER HOST RESOURCE [REASON]")
		}
		host, err := s.servedHost(args[1])
		if err != nil {
			return nil, err
		}
		full, err := jid.New(args[0], host, args[2])
		if err != nil {
			return nil, fmt.Errorf("invalid JID: %w", err)
		}
		reason := "Kicked by the administrator"
		if len(args) == 4 && args[3] != "" {
			reason = args[3]
		}
		n, err := s.Router.Kick(full, reason)
		if errors.Is(err, router.ErrNoSession) {
			return nil, fmt.Errorf("no session for %s", full)
		}
		return fmt.Sprintf("kicked %d session(s) of %s", n, full), err
	})
	a.Handle("check_account", func(ctx context.Context, args []string) (any, error) {
		args, host, err := s.hostForm(args, 1, 1)
		if err != nil {
			return nil, err
		}
		ok := false
		u, d, err := s.account(args[0], host)
		if err == nil {
			if ok, err = s.hostDir(d).Exists(ctx, u); err != nil {
				return nil, err
			}
		} else if d = host; d == "" {
			d = s.cfg.Domain
		}
		if !ok {
			return nil, fmt.Errorf("account %s@%s does not exist", strings.SplitN(args[0], "@", 2)[0], d)
		}
		return fmt.Sprintf("account %s@%s exists", u, d), nil
	})
	a.Handle("check_password", func(ctx context.Context, args []string) (any, error) {
		args, host, err := s.hostForm(args, 2, 1)
		if err != nil {
			return nil, err
		}
		u, d, err := s.account(args[0], host)
		ok := false
		if err == nil {
			if ok, err = s.hostCheckPassword(ctx, u, d, args[1]); err != nil {
				return nil, err
			}
		}
		if !ok {
			return nil, fmt.Errorf("password of %s does not match (or no such account)", args[0])
		}
		return "password matches", nil
	})
	a.Handle("stats", func(ctx context.Context, args []string) (any, error) {
		if len(args) < 1 || len(args) > 2 {
			return nil, errors.New("usage: stats registeredusers|onlineusers|onlineusersnode|uptimeseconds [HOST]")
		}
		host := ""
		if len(args) == 2 {
			host = args[1]
		}
		return s.stat(ctx, args[0], host)
	})
	a.Handle("set_loglevel", func(_ context.Context, args []string) (any, error) {
		if len(args) != 1 {
			return nil, errors.New("usage: set_loglevel LEVEL")
		}
		if err := s.SetLogLevel(args[0]); err != nil {
			return nil, err
		}
		return strings.ToLower(s.level.Level().String()), nil
	})
	a.Handle("mnesia", func(_ context.Context, args []string) (any, error) {
		if len(args) > 1 || (len(args) == 1 && args[0] != "info") {
			return nil, errors.New("usage: mnesia [info]")
		}
		return MnesiaView{Storage: s.storageView(), Tables: s.Store.Tables()}, nil
	})
}
