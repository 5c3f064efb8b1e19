package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/last"
)

// ejabberdctl's last-activity commands (mod_admin_extra over mod_last):
// get_last USER HOST, set_last USER HOST TIMESTAMP STATUS,
// delete_old_users DAYS and delete_old_users_vhost HOST DAYS. The records
// are the last module's (xmppd/mod/last), replicated, so every command works
// through any node; each first catches up with the cluster's commits.
//
// delete_old_users deletes, as unregister does (the account, then its data
// through EvUserRemoved, then its sessions), every account with no session
// on any node whose last logout is more than DAYS days ago. An account
// without a record (older than the module, or never logged in since) is not
// deleted: it gets a record dated now ("noticed"), and a later run deletes
// it if it has still not been seen DAYS days after that. ejabberd deletes
// such accounts at once; xmppd keeps no creation time to judge them by.

func init() { registerFeature(Feature{Name: "last activity admin commands", Build: buildLastAdmin}) }

func buildLastAdmin(s *Server) ([]StagedComponent, error) {
	var lm *last.Module
	for _, m := range s.Modules {
		if m, ok := m.(*last.Module); ok {
			lm = m
		}
	}
	s.lastHandlers(lm)
	return nil, nil
}

// LastInfo is the result of `xmppctl get_last USER HOST`: ejabberd's
// timestamp and status ("ONLINE" with the current time for an account with a
// session on any node, "NOT FOUND" with the current time when no logout is
// recorded).
type LastInfo struct {
	Timestamp string `json:"timestamp"`
	Status    string `json:"status"`
	// NoticedAt is when delete_old_users first saw the account without any
	// record (xmppd's, not ejabberd's).
	NoticedAt string `json:"noticed_at,omitempty"`
}

// OldUsers is the result of delete_old_users(_vhost).
type OldUsers struct {
	Deleted []string `json:"deleted"`
	// Noticed is how many accounts had no record: kept, dated now.
	Noticed int    `json:"noticed"`
	Message string `json:"message"`
}

// lastStamp is ejabberd's xmpp_util:encode_timestamp form: UTC, with
// microseconds unless they are 0 (a record's time, whole seconds).
func lastStamp(t time.Time) string {
	if t.Nanosecond()/1000 == 0 {
		return t.UTC().Format("2006-01-02T15:04:05Z")
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000Z")
}

func (s *Server) lastHandlers(lm *last.Module) {
	a := s.Admin
	need := func() error {
		if lm == nil {
			return errors.New("the last module is not loaded")
		}
		return nil
	}
	a.Handle("get_last", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 2 {
			return nil, errors.New("usage: get_last USER HOST")
		}
		if err := need(); err != nil {
			return nil, err
		}
		u, d, err := s.existing(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		bare, _ := jid.New(u, d, "")
		now := time.Now()
		if lm.Online(bare) {
			return LastInfo{Timestamp: lastStamp(now), Status: "ONLINE"}, nil
		}
		if err := lm.CatchUp(ctx); err != nil {
			return nil, err
		}
		r, ok, err := lm.Get(s.userKey(u, d))
		switch {
		case err != nil:
			return nil, err
		case !ok:
			return LastInfo{Timestamp: lastStamp(now), Status: "NOT FOUND"}, nil
		case r.Noticed:
			return LastInfo{Timestamp: lastStamp(now), Status: "NOT FOUND", NoticedAt: lastStamp(r.Time())}, nil
		}
		return LastInfo{Timestamp: lastStamp(r.Time()), Status: r.Status}, nil
	})
	a.Handle("set_last", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 4 {
			return nil, errors.New("usage: set_last USER HOST TIMESTAMP STATUS")
		}
		if err := need(); err != nil {
			return nil, err
		}
		u, d, err := s.existing(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		ts, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil || ts < 0 {
			return nil, fmt.Errorf("invalid TIMESTAMP %q: seconds since 1970-01-01 UTC", args[2])
		}
		if err := lm.Set(ctx, s.userKey(u, d), last.Record{At: ts, Status: args[3]}); err != nil {
			return nil, err
		}
		return fmt.Sprintf("last activity of %s@%s set to %s", u, d, lastStamp(time.Unix(ts, 0))), nil
	})
	a.Handle("delete_old_users", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 1 {
			return nil, errors.New("usage: delete_old_users DAYS")
		}
		return s.deleteOldUsers(ctx, lm, "", args[0])
	})
	a.Handle("delete_old_users_vhost", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 2 {
			return nil, errors.New("usage: delete_old_users_vhost HOST DAYS")
		}
		d, err := s.servedHost(args[0])
		if err != nil {
			return nil, err
		}
		return s.deleteOldUsers(ctx, lm, d, args[1])
	})
}

// deleteOldUsers runs delete_old_users on host's accounts ("": every host's).
func (s *Server) deleteOldUsers(ctx context.Context, lm *last.Module, host, daysArg string) (any, error) {
	if lm == nil {
		return nil, errors.New("the last module is not loaded")
	}
	age, err := days(daysArg)
	if err != nil {
		return nil, err
	}
	var keys []string
	if host == "" {
		keys, err = s.userDir().List(ctx) // user keys: user@host outside the default host
	} else {
		var locals []string
		if locals, err = s.hostDir(host).List(ctx); err == nil {
			for _, l := range locals {
				keys = append(keys, s.userKey(l, host))
			}
		}
	}
	if err != nil {
		return nil, s.hostDirErr(host, "listing the accounts", err)
	}
	old, noticed, err := lm.Old(ctx, keys, time.Now().Add(-age))
	if err != nil {
		return nil, err
	}
	res := OldUsers{Deleted: []string{}, Noticed: noticed}
	for _, k := range old {
		local, domain, ok := strings.Cut(k, "@")
		if !ok {
			domain = s.cfg.Domain
		}
		bare, err := jid.New(local, domain, "")
		if err != nil {
			continue
		}
		if lm.Online(bare) { // logged in meanwhile
			continue
		}
		if err := s.hostDir(domain).Delete(ctx, local); err != nil {
			return nil, fmt.Errorf("deleting %s (%d deleted before): %w", bare, len(res.Deleted), s.hostDirErr(domain, "removing an account", err))
		}
		s.Router.Kick(bare, "account removed")
		res.Deleted = append(res.Deleted, bare.String())
	}
	res.Message = fmt.Sprintf("Deleted %d users: [%s]", len(res.Deleted), strings.Join(res.Deleted, ", "))
	s.log.Info("old accounts deleted", "host", host, "days", daysArg, "deleted", len(res.Deleted), "noticed_without_record", noticed)
	return res, nil
}
