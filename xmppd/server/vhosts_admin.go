package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"xedge/xmppd/admin"
	"xedge/xmppd/auth"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/mam"
	"xedge/xmppd/mod/muc"
	"xedge/xmppd/mod/offline"
	"xedge/xmppd/mod/private"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/mod/vcard"
	"xedge/xmppd/xmlstream"
)

// ejabberdctl's per-host account data commands, so an operator's scripts
// for a multi-host ejabberd site keep working: ban_account, num_resources,
// get_offline_count, get_roster,
// add_rosteritem, delete_rosteritem, get_vcard(2), set_vcard(2), set_nickname,
// send_message, create_room and destroy_room (and, in their own files, the
// MUC room administration, set_presence, private_get/private_set and the
// delete_old_* purges). Each takes the host as
// ejabberdctl does and refuses a domain not served ("unknown host"); a user
// is the account of that host only (alice@a.example is not alice@b.example).

func init() { registerFeature(Feature{Name: "vhost admin commands", Build: buildVhostAdmin}) }

func buildVhostAdmin(s *Server) ([]StagedComponent, error) {
	var (
		ros *roster.Module
		vc  *vcard.Module
		mu  *muc.Module
		off *offline.Module
		arc *mam.Module
		prv *private.Module
	)
	for _, m := range s.Modules {
		switch m := m.(type) {
		case *roster.Module:
			ros = m
		case *vcard.Module:
			vc = m
		case *muc.Module:
			mu = m
		case *offline.Module:
			off = m
		case *mam.Module:
			arc = m
		case *private.Module:
			prv = m
		}
	}
	s.vhostAdminHandlers(ros, vc, mu)
	s.offlineCountHandler(off)
	s.roomAdminHandlers(mu)
	s.purgeHandlers(off, arc)
	s.sessionAdminHandlers(prv)
	srg := s.srgHandlers(ros)
	nop := func(context.Context) error { return nil }
	return []StagedComponent{
		// set_presence of a session bound on another node goes over the bus.
		{Stage: AfterModules, Name: "vhost admin bus", Start: s.sessionAdminStart, Stop: nop},
		{Stage: AfterModules, Name: "shared roster groups", Start: srg.start, Stop: nop},
	}, nil
}

// RosterItem is one item of `xmppctl get_roster USER HOST`.
type RosterItem struct {
	JID          string   `json:"jid"`
	Nick         string   `json:"nick"`
	Subscription string   `json:"subscription"`
	Ask          string   `json:"ask"`
	Groups       []string `json:"groups"`
}

// existing resolves USER HOST to an account that exists.
func (s *Server) existing(ctx context.Context, user, host string) (local, domain string, err error) {
	if local, domain, err = s.account(user, host); err != nil {
		return "", "", err
	}
	ok, err := s.hostDir(domain).Exists(ctx, local)
	if err != nil {
		return "", "", fmt.Errorf("checking account %s@%s: %w", local, domain, err)
	}
	if !ok {
		return "", "", fmt.Errorf("account %s@%s does not exist", local, domain)
	}
	return local, domain, nil
}

// vcardPath is the element path NAME [SUBNAME] of get_vcard/set_vcard
// (ejabberd's names: FN, NICKNAME, N FAMILY, EMAIL USERID, ORG ORGNAME ...).
func vcardPath(names ...string) ([]string, error) {
	for i, n := range names {
		n = strings.ToUpper(strings.TrimSpace(n))
		if n == "" || strings.ContainsAny(n, "<>&'\" ") {
			return nil, fmt.Errorf("invalid vCard field %q", names[i])
		}
		names[i] = n
	}
	return names, nil
}

func (s *Server) vhostAdminHandlers(ros *roster.Module, vc *vcard.Module, mu *muc.Module) {
	a := s.Admin
	a.Handle("ban_account", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 3 {
			return nil, errors.New("usage: ban_account USER HOST REASON")
		}
		u, d, err := s.existing(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		var b [18]byte
		_, _ = rand.Read(b[:])
		if err := s.hostDir(d).SetPassword(ctx, u, hex.EncodeToString(b[:])); err != nil {
			return nil, s.hostDirErr(d, "banning an account", err)
		}
		bare, _ := jid.New(u, d, "")
		reason := "Account banned"
		if strings.TrimSpace(args[2]) != "" {
			reason += ": " + args[2]
		}
		n, _ := s.Router.Kick(bare, reason)
		s.log.Info("account banned", "user", bare.String(), "reason", args[2], "sessions_kicked", n)
		return fmt.Sprintf("account %s banned (password replaced by a random one), %d session(s) kicked", bare, n), nil
	})

	a.Handle("num_resources", func(_ context.Context, args []string) (any, error) {
		if len(args) != 2 {
			return nil, errors.New("usage: num_resources USER HOST")
		}
		u, d, err := s.account(args[0], args[1])
		if err != nil {
			return nil, err
		}
		bare, _ := jid.New(u, d, "")
		return len(s.Router.Sessions(bare)), nil
	})

	needRoster := func() error {
		if ros == nil {
			return errors.New("the roster module is not loaded")
		}
		return nil
	}
	a.Handle("get_roster", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 2 {
			return nil, errors.New("usage: get_roster USER HOST")
		}
		if err := needRoster(); err != nil {
			return nil, err
		}
		u, d, err := s.existing(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		items, err := ros.Items(s.userKey(u, d))
		if err != nil {
			return nil, err
		}
		out := []RosterItem{}
		for _, it := range items {
			ask := "none"
			if it.Ask {
				ask = "out"
			}
			g := it.Groups
			if g == nil {
				g = []string{}
			}
			out = append(out, RosterItem{JID: it.JID, Nick: it.Name, Subscription: it.Sub, Ask: ask, Groups: g})
		}
		return out, nil
	})
	// rosterTarget is the preamble of add_rosteritem and delete_rosteritem:
	// the roster module is loaded, LOCALUSER LOCALHOST (args 0, 1) is an
	// existing account, USER HOST (args 2, 3) a contact's bare JID.
	rosterTarget := func(ctx context.Context, args []string) (u, d string, c jid.JID, err error) {
		if err = needRoster(); err != nil {
			return "", "", c, err
		}
		if u, d, err = s.existing(ctx, args[0], args[1]); err != nil {
			return "", "", c, err
		}
		if c, err = jid.New(args[2], args[3], ""); err != nil || c.Local == "" {
			return "", "", c, fmt.Errorf("invalid contact %s@%s", args[2], args[3])
		}
		return u, d, c, nil
	}
	a.Handle("add_rosteritem", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 7 {
			return nil, errors.New("usage: add_rosteritem LOCALUSER LOCALHOST USER HOST NICK GROUP SUBS")
		}
		u, d, c, err := rosterTarget(ctx, args)
		if err != nil {
			return nil, err
		}
		var groups []string
		for _, g := range strings.Split(args[5], ";") { // ejabberd: "g1;g2"
			if g = strings.TrimSpace(g); g != "" {
				groups = append(groups, g)
			}
		}
		it := roster.Item{JID: c.String(), Name: args[4], Groups: groups, Sub: strings.ToLower(args[6])}
		if err := ros.SetItem(ctx, s.userKey(u, d), it); err != nil {
			return nil, err
		}
		return fmt.Sprintf("%s added to the roster of %s@%s (subscription %s)", c, u, d, it.Sub), nil
	})
	a.Handle("delete_rosteritem", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 4 {
			return nil, errors.New("usage: delete_rosteritem LOCALUSER LOCALHOST USER HOST")
		}
		u, d, c, err := rosterTarget(ctx, args)
		if err != nil {
			return nil, err
		}
		ok, err := ros.RemoveItem(ctx, s.userKey(u, d), c.String())
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s is not in the roster of %s@%s", c, u, d)
		}
		return fmt.Sprintf("%s removed from the roster of %s@%s", c, u, d), nil
	})

	getVCard := func(ctx context.Context, args []string) (any, error) {
		if vc == nil {
			return nil, errors.New("the vcard module is not loaded")
		}
		u, d, err := s.existing(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		path, err := vcardPath(args[2:]...)
		if err != nil {
			return nil, err
		}
		v, ok, err := vc.Get(s.userKey(u, d))
		if err != nil {
			return nil, err
		}
		for _, n := range path {
			if !ok || v == nil {
				break
			}
			v = v.Child(vcard.NS, n)
		}
		if !ok || v == nil {
			return nil, fmt.Errorf("%s@%s's vCard has no %s", u, d, strings.Join(path, " "))
		}
		return v.Text(), nil
	}
	setVCard := func(ctx context.Context, args []string) (any, error) {
		if vc == nil {
			return nil, errors.New("the vcard module is not loaded")
		}
		u, d, err := s.existing(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		path, err := vcardPath(args[2 : len(args)-1]...)
		if err != nil {
			return nil, err
		}
		key := s.userKey(u, d)
		v, ok, err := vc.Get(key)
		if err != nil {
			return nil, err
		}
		if !ok {
			v = xmlstream.New(vcard.NS, "vCard")
		}
		parent := v
		for i, n := range path {
			if i == len(path)-1 {
				parent.RemoveChildren(vcard.NS, n)
				parent.Append(xmlstream.New(vcard.NS, n).AppendText(args[len(args)-1]))
				break
			}
			c := parent.Child(vcard.NS, n)
			if c == nil {
				c = xmlstream.New(vcard.NS, n)
				parent.Append(c)
			}
			parent = c
		}
		if err := vc.Put(ctx, key, v); err != nil {
			return nil, err
		}
		return fmt.Sprintf("%s of %s@%s's vCard set", strings.Join(path, " "), u, d), nil
	}
	for _, c := range []struct {
		name, usage string
		fn          admin.Handler
	}{
		{"get_vcard", "USER HOST NAME", getVCard},
		{"get_vcard2", "USER HOST NAME SUBNAME", getVCard},
		{"set_vcard", "USER HOST NAME CONTENT", setVCard},
		{"set_vcard2", "USER HOST NAME SUBNAME CONTENT", setVCard},
	} {
		n, usage, fn := len(strings.Fields(c.usage)), "usage: "+c.name+" "+c.usage, c.fn
		a.Handle(c.name, func(ctx context.Context, args []string) (any, error) {
			if len(args) != n {
				return nil, errors.New(usage)
			}
			return fn(ctx, args)
		})
	}
	a.Handle("set_nickname", func(ctx context.Context, args []string) (any, error) { // the vCard's NICKNAME
		if len(args) != 3 {
			return nil, errors.New("usage: set_nickname USER HOST NICKNAME")
		}
		return setVCard(ctx, []string{args[0], args[1], "NICKNAME", args[2]})
	})

	a.Handle("send_message", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 5 {
			return nil, errors.New("usage: send_message TYPE FROM TO SUBJECT BODY")
		}
		typ := args[0]
		switch typ {
		case "chat", "normal", "headline", "groupchat":
		default:
			return nil, fmt.Errorf("message type %q: chat, normal, headline or groupchat", typ)
		}
		from, err := jid.Parse(args[1])
		if err != nil {
			return nil, fmt.Errorf("invalid FROM %q: %w", args[1], err)
		}
		if _, err := s.servedHost(from.Domain); err != nil {
			return nil, fmt.Errorf("FROM %s: %w", from, err)
		}
		to, err := jid.Parse(args[2])
		if err != nil {
			return nil, fmt.Errorf("invalid TO %q: %w", args[2], err)
		}
		m := xmlstream.New(xmlstream.NSClient, "message", "type", typ, "from", from.String(), "to", to.String(), "id", "ctl-"+randomID())
		if args[3] != "" {
			m.Append(xmlstream.New(xmlstream.NSClient, "subject").AppendText(args[3]))
		}
		m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(args[4]))
		s.Router.Route(ctx, m)
		return fmt.Sprintf("message sent from %s to %s", from, to), nil
	})

	// mucService resolves SERVICE HOST: HOST served, SERVICE its MUC service.
	mucService := func(service, host string) (string, error) {
		if mu == nil {
			return "", errors.New("the muc module is not loaded")
		}
		d, err := s.servedHost(host)
		if err != nil {
			return "", err
		}
		hc, _ := s.cfg.Host(d)
		if !strings.EqualFold(service, hc.MUCDomain) {
			return "", fmt.Errorf("%s is not the MUC service of %s (its service is %s)", service, d, hc.MUCDomain)
		}
		return hc.MUCDomain, nil
	}
	a.Handle("create_room", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 3 && len(args) != 4 {
			return nil, errors.New("usage: create_room NAME SERVICE HOST [OWNER]")
		}
		svc, err := mucService(args[1], args[2])
		if err != nil {
			return nil, err
		}
		r, err := jid.New(args[0], svc, "")
		if err != nil || r.Local == "" {
			return nil, fmt.Errorf("invalid room name %q", args[0])
		}
		var owners []string
		if len(args) == 4 { // xmppctl's addition: the room's owner, who configures it
			o, err := jid.Parse(args[3])
			if err != nil || o.Local == "" || o.Resource != "" {
				return nil, fmt.Errorf("invalid OWNER %q: want a bare JID", args[3])
			}
			owners = []string{o.String()}
		}
		created, err := mu.CreateRoom(ctx, r, owners)
		if err != nil {
			return nil, err
		}
		if !created {
			return nil, fmt.Errorf("room %s exists", r)
		}
		return fmt.Sprintf("room %s created", r), nil
	})
	a.Handle("destroy_room", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 2 {
			return nil, errors.New("usage: destroy_room NAME SERVICE")
		}
		r, err := mucRoom(mu, args[0], args[1])
		if err != nil {
			return nil, err
		}
		existed, err := mu.DestroyRoom(ctx, r)
		if err != nil {
			return nil, err
		}
		if !existed {
			return nil, fmt.Errorf("room %s does not exist", r)
		}
		return fmt.Sprintf("room %s destroyed", r), nil
	})
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hostDirErr is dirErr naming the auth method of the host whose backend
// refused (domain "": every host, dirErr).
func (s *Server) hostDirErr(domain, what string, err error) error {
	if domain == "" {
		return s.dirErr(what, err)
	}
	method := s.cfg.Auth.Method
	if hc, ok := s.cfg.Host(domain); ok && hc.Auth.Method != "" {
		method = hc.Auth.Method
	}
	if errors.Is(err, auth.ErrNotSupported) {
		return fmt.Errorf("%s is not possible with %s's auth-method %s: its accounts are managed in its own directory (%w)", what, domain, method, err)
	}
	return err
}

// offlineCountHandler is ejabberdctl's get_offline_count USER HOST.
func (s *Server) offlineCountHandler(off *offline.Module) {
	s.Admin.Handle("get_offline_count", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 2 {
			return nil, errors.New("usage: get_offline_count USER HOST")
		}
		if off == nil {
			return nil, errors.New("the offline module is not loaded")
		}
		u, d, err := s.existing(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		return off.Count(s.userKey(u, d)), nil
	})
}
