package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/router"
)

// ejabberdctl's argument forms, so an ejabberd operator's scripts keep
// working: every command that names an account takes USER HOST where xmppctl
// takes USER, and HOST must be the domain this node serves.

// hostForm accepts args in xmppctl's form (native arguments) or ejabberdctl's
// (a HOST inserted at index at), checks HOST and returns the native form.
func (s *Server) hostForm(args []string, native, at int) ([]string, error) {
	switch len(args) {
	case native:
		return args, nil
	case native + 1:
		if err := s.checkHost(args[at]); err != nil {
			return nil, err
		}
		return append(append([]string(nil), args[:at]...), args[at+1:]...), nil
	}
	return nil, fmt.Errorf("want %d argument(s) (or %d with HOST, as ejabberdctl), got %d", native, native+1, len(args))
}

func (s *Server) checkHost(host string) error {
	if !strings.EqualFold(host, s.cfg.Domain) {
		return fmt.Errorf("host %q is not served here (this node serves %s)", host, s.cfg.Domain)
	}
	return nil
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
		if err := s.checkHost(args[1]); err != nil {
			return nil, err
		}
		bare, err := jid.New(args[0], s.cfg.Domain, "")
		if err != nil {
			return nil, fmt.Errorf("invalid user %q: %w", args[0], err)
		}
		return sessionInfos(s.Router.Sessions(bare)), nil
	})
	a.Handle("kick_session", func(_ context.Context, args []string) (any, error) {
		if len(args) < 3 || len(args) > 4 {
			return nil, errors.New("usage: kick_session USER HOST RESOURCE [REASON]")
		}
		if err := s.checkHost(args[1]); err != nil {
			return nil, err
		}
		full, err := jid.New(args[0], s.cfg.Domain, args[2])
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
		args, err := s.hostForm(args, 1, 1)
		if err != nil {
			return nil, err
		}
		ok := false
		if u, err := s.adminUser(args[0]); err == nil {
			if ok, err = s.userDir().Exists(ctx, u); err != nil {
				return nil, err
			}
		}
		if !ok {
			return nil, fmt.Errorf("account %s@%s does not exist", args[0], s.cfg.Domain)
		}
		return fmt.Sprintf("account %s@%s exists", args[0], s.cfg.Domain), nil
	})
	a.Handle("check_password", func(ctx context.Context, args []string) (any, error) {
		args, err := s.hostForm(args, 2, 1)
		if err != nil {
			return nil, err
		}
		ok, err := s.checkPassword(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("password of %s@%s does not match (or no such account)", args[0], s.cfg.Domain)
		}
		return "password matches", nil
	})
	a.Handle("stats", func(ctx context.Context, args []string) (any, error) {
		if len(args) < 1 || len(args) > 2 {
			return nil, errors.New("usage: stats registeredusers|onlineusers|onlineusersnode|uptimeseconds [HOST]")
		}
		if len(args) == 2 {
			if err := s.checkHost(args[1]); err != nil {
				return nil, err
			}
		}
		switch args[0] {
		case "registeredusers":
			l, err := s.userDir().List(ctx)
			if err != nil {
				return nil, s.dirErr("counting the accounts", err)
			}
			return len(l), nil
		case "onlineusers", "onlineusersnode":
			return s.Router.Count(), nil
		case "uptimeseconds":
			return int64(time.Since(s.started).Seconds()), nil
		}
		return nil, fmt.Errorf("unknown statistic %q: registeredusers, onlineusers, onlineusersnode or uptimeseconds", args[0])
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
