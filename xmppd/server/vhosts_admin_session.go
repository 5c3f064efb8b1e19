package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"xedge/storage"
	"xedge/xmppd/cluster"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/private"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// ejabberdctl's set_presence (mod_admin_extra) and private_get/private_set
// (XEP-0049 private XML storage, mod_private's data):
//
//   - set_presence USER HOST RESOURCE TYPE SHOW STATUS PRIORITY makes the
//     bound session USER@HOST/RESOURCE send that presence, as if its client
//     had: broadcast to the contacts, recorded as the session's presence. A
//     session bound on another node gets it there (over the cluster bus).
//   - private_get USER HOST ELEMENT NS prints the stored fragment in a
//     jabber:iq:private query, as ejabberdctl does; private_set USER HOST
//     ELEMENTSTRING stores the fragment (its root's namespace and name are
//     the key), as a client's set would.

// kindAdminPresence is the bus message carrying set_presence's presence to
// the node holding the session (To: the full JID, Body: the presence).
const kindAdminPresence = "admin.presence"

// adminStreamHead is the stream header ELEMENTSTRING and bus bodies are read
// under (jabber:client default namespace).
var adminStreamHead = []byte("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

// parseElement reads one XML element.
func parseElement(b []byte) (*xmlstream.Element, error) {
	d := xmlstream.NewDecoder(io.MultiReader(bytes.NewReader(adminStreamHead), bytes.NewReader(b)), xmlstream.DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		return nil, err
	}
	return d.Next()
}

// adminPresence builds set_presence's presence from TYPE SHOW STATUS PRIORITY.
func adminPresence(from jid.JID, typ, show, status, priority string) (*xmlstream.Element, error) {
	p := xmlstream.New(xmlstream.NSClient, "presence", "from", from.String())
	switch typ {
	case "available", "":
	case "unavailable":
		p.SetAttr("type", typ)
	default:
		return nil, fmt.Errorf("presence type %q: available or unavailable", typ)
	}
	switch show {
	case "", "available":
	case "away", "chat", "dnd", "xa":
		p.Append(xmlstream.New(xmlstream.NSClient, "show").AppendText(show))
	default:
		return nil, fmt.Errorf("show %q: away, chat, dnd or xa (or available for none)", show)
	}
	if status != "" {
		p.Append(xmlstream.New(xmlstream.NSClient, "status").AppendText(status))
	}
	n, err := strconv.Atoi(priority)
	if err != nil || n < -128 || n > 127 {
		return nil, fmt.Errorf("priority %q: an integer from -128 to 127", priority)
	}
	p.Append(xmlstream.New(xmlstream.NSClient, "priority").AppendText(priority))
	return p, nil
}

// applyPresence has the local session sess send p as its client would: the
// hooks (presence broadcast, offline delivery) and else the session's
// record, as c2s does for a presence without to.
func (s *Server) applyPresence(ctx context.Context, sess module.Session, p *xmlstream.Element) {
	if s.Router.Run(ctx, module.EvC2SIn, &module.EventData{Stanza: p, From: sess.JID(), Session: sess}) {
		return
	}
	if p.Attr("type") == "unavailable" {
		sess.SetPresence(nil)
	} else {
		sess.SetPresence(p)
	}
}

// localSession returns the session bound to full on this node, or nil.
func (s *Server) localSession(full jid.JID) module.Session {
	sess := s.Router.Session(full)
	if _, remote := sess.(interface{ Remote() bool }); remote {
		return nil
	}
	return sess
}

// presenceFromBus applies a set_presence another node forwarded.
func (s *Server) presenceFromBus(ctx context.Context, _ cluster.Peer, m *cluster.Message) ([]byte, error) {
	full, err := jid.Parse(m.To)
	if err != nil {
		return nil, err
	}
	sess := s.localSession(full)
	if sess == nil {
		return nil, fmt.Errorf("session %s not found on node %s", full, s.cfg.Node)
	}
	p, err := parseElement(m.Body)
	if err != nil {
		return nil, fmt.Errorf("undecodable presence: %w", err)
	}
	s.applyPresence(ctx, sess, p)
	return nil, nil
}

// sessionAdminStart registers the bus handler of forwarded set_presence.
func (s *Server) sessionAdminStart(context.Context) error {
	if b := s.Bus(); b != nil {
		b.Handle(kindAdminPresence, s.presenceFromBus)
	}
	return nil
}

func (s *Server) sessionAdminHandlers(priv *private.Module) {
	a := s.Admin
	a.Handle("set_presence", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 7 {
			return nil, errors.New("usage: set_presence USER HOST RESOURCE TYPE SHOW STATUS PRIORITY")
		}
		u, d, err := s.account(args[0], args[1])
		if err != nil {
			return nil, err
		}
		full, err := jid.New(u, d, args[2])
		if err != nil || full.Resource == "" {
			return nil, fmt.Errorf("invalid resource %q", args[2])
		}
		p, err := adminPresence(full, args[3], args[4], args[5], args[6])
		if err != nil {
			return nil, err
		}
		sess := s.Router.Session(full)
		if sess == nil {
			return nil, fmt.Errorf("session %s not found (User session not found)", full)
		}
		if rs, ok := sess.(interface{ Node() string }); ok && rs.Node() != s.cfg.Node {
			b := s.Bus()
			if b == nil {
				return nil, fmt.Errorf("session %s is on node %s and this node has no cluster bus", full, rs.Node())
			}
			body := xmlstream.AppendElement(nil, p, xmlstream.NSClient)
			if _, err := b.Call(ctx, rs.Node(), &cluster.Message{Kind: kindAdminPresence, To: full.String(), Body: body}); err != nil {
				return nil, fmt.Errorf("presence of %s on node %s: %w", full, rs.Node(), err)
			}
		} else {
			s.applyPresence(ctx, sess, p)
		}
		s.log.Info("presence set by the administrator", "jid", full.String(), "type", args[3], "show", args[4])
		return fmt.Sprintf("presence of %s set", full), nil
	})

	needPrivate := func() error {
		if priv == nil {
			return errors.New("the private module is not loaded")
		}
		return nil
	}
	a.Handle("private_get", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 4 {
			return nil, errors.New("usage: private_get USER HOST ELEMENT NS")
		}
		if err := needPrivate(); err != nil {
			return nil, err
		}
		u, d, err := s.existing(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		name, ns := strings.TrimSpace(args[2]), strings.TrimSpace(args[3])
		if name == "" || strings.ContainsAny(name, "<>&'\" :") {
			return nil, fmt.Errorf("invalid element name %q", args[2])
		}
		if private.Reserved(ns) {
			return nil, fmt.Errorf("namespace %q is reserved: not private storage", ns)
		}
		// A write through the log first: this node's read then holds what a
		// client stored through another node before the call.
		if err := s.Store.Apply(ctx, storage.Delete(private.Table, "\x00barrier")); err != nil {
			return nil, fmt.Errorf("catching up with the cluster: %w", err)
		}
		frag, err := priv.Get(s.userKey(u, d), ns, name)
		if err != nil {
			return nil, fmt.Errorf("%s@%s's stored %s: %w", u, d, ns, err)
		}
		q := xmlstream.New(private.NS, "query").Append(frag)
		return string(xmlstream.AppendElement(nil, q, "")), nil
	})
	a.Handle("private_set", func(ctx context.Context, args []string) (any, error) {
		if len(args) != 3 {
			return nil, errors.New("usage: private_set USER HOST ELEMENTSTRING")
		}
		if err := needPrivate(); err != nil {
			return nil, err
		}
		u, d, err := s.existing(ctx, args[0], args[1])
		if err != nil {
			return nil, err
		}
		frag, err := parseElement([]byte(args[2]))
		if err != nil {
			return nil, fmt.Errorf("ELEMENTSTRING is not one XML element: %w", err)
		}
		if err := priv.Set(ctx, s.userKey(u, d), frag); err != nil {
			return nil, err
		}
		return fmt.Sprintf("<%s xmlns='%s'/> of %s@%s stored", frag.Local, frag.Space, u, d), nil
	})
}
