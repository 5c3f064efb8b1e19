package server

import (
	"context"
	"errors"
	"time"

	"xedge/storage"
	"xedge/xmppd/cluster"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/resume"
	"xedge/xmppd/router"
	"xedge/xmppd/xmlstream"
)

// XEP-0198 resumption on any node of the cluster (package resume over the
// cluster bus): c2s replicates resumable sessions to the other nodes and
// resumes sessions it does not hold by handover or from a copy.

func init() { registerFeature(Feature{Name: "cluster resumption", Build: buildResume}) }

type resumeFeature struct {
	s *Server
	m *resume.Manager
}

func buildResume(s *Server) ([]StagedComponent, error) {
	if !s.cfg.Clustered() || s.cfg.Witness || s.cfg.SMTimeout <= 0 {
		return nil, nil
	}
	f := &resumeFeature{s: s}
	s.Admin.Handle("resume", f.admin)
	return []StagedComponent{{Stage: AfterStorage, Name: "cluster resumption", Start: f.start, Stop: f.stop}}, nil
}

func (f *resumeFeature) start(ctx context.Context) error {
	b := f.s.Bus()
	if b == nil {
		return errors.New("cluster resumption: no cluster bus")
	}
	f.m = resume.New(resume.Config{
		Node: f.s.cfg.Node, Bus: b, Peers: f.peers, Timeout: f.s.cfg.SMTimeout,
		Reroute: f.reroute, Deliver: f.deliver, Settled: f.s.Router.ResumeSettled,
		Refused: f.s.Router.ResumeRefused, TakeOver: f.s.Router.TakeOverHeld, Logger: f.s.log,
	}, f.s.C2S)
	f.m.Register()
	// A stanza a lost node had not acknowledged on the bus, and which this
	// node's copy of its recipient's session holds, reaches the client by
	// the copy: it is not routed again besides (delivered twice, or bounced
	// as undeliverable when offline storage is full while it was delivered).
	b.SetHeld(func(node string, m *cluster.Message) bool {
		return m.Kind == router.KindStanza && f.m.Holds(node, m.To, m.Body)
	})
	// A lost node's resumable sessions are not closed for their contacts while
	// they can be resumed here (the router holds them until Settled).
	f.s.Router.SetResumable(f.m.CopiesOf)
	if err := f.m.Start(ctx); err != nil {
		return err
	}
	f.s.C2S.SetReplicator(f.m)
	return nil
}

func (f *resumeFeature) stop(ctx context.Context) error {
	if f.m == nil {
		return nil
	}
	return f.m.Stop(ctx)
}

// peers returns the other live nodes (their rows in the node table).
func (f *resumeFeature) peers() map[string]uint64 {
	out := map[string]uint64{}
	f.s.Store.Ephemeral(NodeTable).Scan("", func(r storage.Row) bool {
		if r.Key == r.Node && r.Node != f.s.cfg.Node {
			out[r.Node] = r.Incarnation
		}
		return true
	})
	return out
}

// reroute hands the unacknowledged stanzas of a gone node's session that was
// not resumed in time back to the router, as c2s does when a session ends:
// messages to other resources or offline storage, IQ requests answered with
// an error.
func (f *resumeFeature) reroute(ctx context.Context, j jid.JID, queue []*xmlstream.Element) {
	for _, st := range queue {
		switch st.Local {
		case "message":
			if t := st.Attr("type"); t != "error" && t != "groupchat" {
				if st.Child("urn:xmpp:delay", "delay") == nil {
					st.Append(xmlstream.New("urn:xmpp:delay", "delay", "from", f.s.cfg.Domain, "stamp", time.Now().UTC().Format("2006-01-02T15:04:05Z")))
				}
				f.s.Router.Route(ctx, st)
			}
		case "iq":
			if t := st.Attr("type"); t == "get" || t == "set" {
				f.s.Router.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", ""))
			}
		}
	}
}

// deliver routes, as they are, stanzas the previous node of a session resumed
// here queued after this node took its state (they reach the session here).
func (f *resumeFeature) deliver(ctx context.Context, _ jid.JID, stanzas []*xmlstream.Element) {
	for _, st := range stanzas {
		f.s.Router.Route(ctx, st)
	}
}

// admin is `xmppctl resume` (counts) and `xmppctl resume detach` (close every
// resumable session's connection, keeping the session: clients resume on any node).
func (f *resumeFeature) admin(_ context.Context, args []string) (any, error) {
	if len(args) == 1 && args[0] == "detach" {
		return map[string]int{"detached": f.s.C2S.DetachResumable()}, nil
	}
	if len(args) != 0 {
		return nil, errors.New("usage: resume [detach]")
	}
	if f.m == nil {
		return nil, errors.New("cluster resumption not running")
	}
	return f.m.Stats(), nil
}
