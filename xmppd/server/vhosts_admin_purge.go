package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"xedge/xmppd/mod/mam"
	"xedge/xmppd/mod/offline"
)

// ejabberdctl's purges: delete_old_messages DAYS (offline messages stored
// more than DAYS days ago, mod_offline) and delete_old_mam_messages TYPE
// DAYS (archived messages older than DAYS days: TYPE chat for the users'
// archives, groupchat for the MUC rooms', all for both; mod_mam). Every
// host's data: ejabberd's commands take no host either. The deletes go
// through the replicated store, so the data is gone on every node.
//
// ejabberdctl's delete_old_users and delete_old_users_vhost are in
// admin_last.go (they pick accounts by the last module's records).

// days parses DAYS: a whole number of days, 0 or more.
func days(arg string) (time.Duration, error) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 0 || n > 100000 {
		return 0, fmt.Errorf("invalid DAYS %q: a whole number of days, 0 or more", arg)
	}
	return time.Duration(n) * 24 * time.Hour, nil
}

func (s *Server) purgeHandlers(off *offline.Module, arch *mam.Module) {
	a := s.Admin
	a.Handle("delete_old_messages", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 1 {
			return nil, errors.New("usage: delete_old_messages DAYS")
		}
		if off == nil {
			return nil, errors.New("the offline module is not loaded")
		}
		age, err := days(args[0])
		if err != nil {
			return nil, err
		}
		n, err := off.DeleteOlder(ctx, time.Now().Add(-age))
		if err != nil {
			return nil, err
		}
		s.log.Info("old offline messages deleted", "days", args[0], "deleted", n)
		return fmt.Sprintf("%d offline message(s) older than %s day(s) deleted", n, args[0]), nil
	})
	a.Handle("delete_old_mam_messages", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 2 {
			return nil, errors.New("usage: delete_old_mam_messages TYPE DAYS")
		}
		if arch == nil {
			return nil, errors.New("the mam module is not loaded")
		}
		switch args[0] {
		case mam.PurgeChat, mam.PurgeGroupchat, mam.PurgeAll:
		default:
			return nil, fmt.Errorf("invalid TYPE %q: chat, groupchat or all", args[0])
		}
		age, err := days(args[1])
		if err != nil {
			return nil, err
		}
		n, err := arch.DeleteOlder(ctx, time.Now().Add(-age), args[0])
		if err != nil {
			return nil, err
		}
		s.log.Info("old archived messages deleted", "type", args[0], "days", args[1], "deleted", n)
		return fmt.Sprintf("%d archived %s message(s) older than %s day(s) deleted", n, args[0], args[1]), nil
	})
}
