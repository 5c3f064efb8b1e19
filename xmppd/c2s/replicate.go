package c2s

import (
	"context"
	"errors"
	"strconv"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// SMState is a resumable session's XEP-0198 state as another node needs it to
// take the session over: what package resume replicates and hands over.
type SMState struct {
	ID  string
	JID jid.JID
	// HIn is the count of stanzas received from the client (the h of <resumed/>).
	HIn uint32
	// OutCount is the number of the last stanza sent to the client; Queue holds the
	// unacknowledged ones, numbered OutCount-len(Queue)+1 .. OutCount.
	OutCount   uint32
	Queue      []*xmlstream.Element
	Presence   *xmlstream.Element // last available presence (nil: unavailable)
	Interested bool
	Since      time.Time
	Mech       string
	TLS        bool
}

// ErrNoSession is returned by Replicator.Fetch and Server.Handover for a
// resumption id nobody holds (any more).
var ErrNoSession = errors.New("c2s: no resumable session with that id")

// Replicator keeps the state of resumable sessions where other nodes find it
// (package resume implements it). The c2s server calls Put, Queued, Acked and
// Ended while holding a session's lock: they must not block or call back into
// the server. Fetch and Sync may take a network round trip.
type Replicator interface {
	// NewID returns a fresh resumption id (it may name this node).
	NewID() string
	// Put records st's scalar state (st.Queue is empty: stanzas go through Queued).
	Put(st *SMState)
	// Queued records stanza number seq sent to the client of session id.
	Queued(id string, seq uint32, st *xmlstream.Element)
	// Acked records that the client acknowledged every stanza up to number h.
	Acked(id string, h uint32)
	// Ended forgets session id (terminated, or handed over to another node).
	Ended(id string)
	// Fetch takes over a session this node does not hold: from the live node that
	// holds it (which detaches and forgets it) or from the replicated state of a
	// node that is gone. It returns ErrNoSession when nobody has it.
	Fetch(ctx context.Context, id, user string) (*SMState, error)
	// Sync returns once every change recorded so far has reached at least one
	// other node (immediately when there is none).
	Sync(ctx context.Context) error
	// Replicated reports whether other nodes hold copies: then a stopping node
	// leaves its resumable sessions to them instead of ending them.
	Replicated() bool
}

// SetReplicator makes r hold the resumption state of sessions that enable
// resumption from now on (before Start).
func (s *Server) SetReplicator(r Replicator) { s.repl = r }

// snapshotLocked returns the session's scalar state (no queue).
func (s *session) snapshotLocked() *SMState {
	return &SMState{ID: s.smID, JID: s.jid, HIn: s.hIn, OutCount: s.outCount, Presence: s.presence,
		Interested: s.interested, Since: s.since, Mech: s.mech, TLS: s.tls}
}

// replPutLocked records the scalar state with the replicator, if this session is replicated.
func (s *session) replPutLocked() {
	if s.repl != nil {
		s.repl.Put(s.snapshotLocked())
	}
}

// answerR answers the client's <r/>. With a replicator the answer waits until
// what the client's stanzas caused (stanzas queued for other sessions here)
// has reached another node: an <a/> tells the client the server is now
// responsible for them, so none of them is lost if this node dies.
func (c *conn) answerR(s *session) {
	s.mu.Lock()
	h, on, repl := s.hIn, s.smEnabled, s.repl
	if repl != nil {
		s.replPutLocked()
	}
	s.mu.Unlock()
	if !on {
		return
	}
	a := []byte("<a xmlns='urn:xmpp:sm:3' h='" + strconv.FormatUint(uint64(h), 10) + "'/>")
	if repl == nil {
		s.queueRaw(a)
		return
	}
	ctx := c.ctx
	go func() {
		// No <a/> before another node confirmed the state: an acknowledged
		// stanza held only here is lost with this node (the client does not
		// send it again). Sync succeeds at once only on a node that is alone
		// (none of its peers can resume its sessions from a copy).
		for try := 0; ; try++ {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := repl.Sync(sctx)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return // the connection ended: nothing is acknowledged
			}
			if try == 0 {
				c.log.Warn("stream management: state not confirmed by another node; acknowledging once it is", "jid", s.jid.String(), "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		s.queueRaw(a)
	}()
}

// Refuser is what a Replicator may implement to hear that a state its Fetch
// returned was not resumed (Server.covers): what other nodes' copies bring for
// that session later is rerouted instead of kept for it.
type Refuser interface {
	Refused(id string, j jid.JID, h uint32)
}

// covers reports whether st, a session's state taken over from another node,
// holds everything the client may not have: the client's h (the stanzas it
// received) must not lie beyond the last stanza the state knows of. A state
// older than that is a copy that missed the owner's last updates (a node
// declared lost by mistake kept serving the session while its peers' copies
// went stale, then died): the stanzas the owner queued after the copy's last
// one are in no queue, and resuming would drop them without a word. The
// resumption is refused instead (<failed/>): the client resends what it had
// not acknowledged on a new session. (Every stanza of st's queue is numbered
// at or below h: the client has them.)
func (srv *Server) covers(st *SMState, h uint32) bool {
	if d := h - st.OutCount; d == 0 || d >= 1<<31 {
		return true
	}
	srv.log.Warn("stream management: the session's state taken over from another node is older than the client's (the client received stanzas it does not hold): resumption refused",
		"jid", st.JID.String(), "client_h", h, "state_last", st.OutCount, "queued", len(st.Queue))
	if r, ok := srv.repl.(Refuser); ok {
		r.Refused(st.ID, st.JID, h)
	}
	return false
}

// adopt makes a session from state taken over from another node and binds it
// to this connection: the <resumed/> answer, then every stanza the client has
// not acknowledged (h), then the session's presence is announced again.
func (c *conn) adopt(st *SMState, h uint32) {
	srv := c.srv
	s := &session{srv: srv, id: randomID(), jid: st.JID, jidS: st.JID.String(), addr: c.raw.RemoteAddr().String(),
		since: st.Since, mech: st.Mech, tls: st.TLS || c.secure,
		smEnabled: true, smResume: true, smID: st.ID, hIn: st.HIn, outCount: st.OutCount, interested: st.Interested,
		repl: srv.repl}
	if s.since.IsZero() {
		s.since = time.Now()
	}
	s.unacked = append(s.unacked, st.Queue...)
	s.mu.Lock()
	s.ackLocked(h) // covers: h is not beyond outCount
	// This node's copy of the state, before anything new is queued.
	s.replPutLocked()
	first := s.outCount - uint32(len(s.unacked))
	for i, q := range s.unacked {
		s.repl.Queued(s.smID, first+uint32(i)+1, q)
	}
	c.writing = true // hold the writer back until the session is routable (as bind)
	queued := len(s.unacked)
	s.mu.Unlock()
	c.wmu.Lock()
	c.sess = s
	c.wmu.Unlock()
	srv.addResumable(s.smID, s)
	resumed := xmlstream.New(nsSM, "resumed", "previd", st.ID, "h", strconv.FormatUint(uint64(st.HIn), 10))
	s.attach(c, xmlstream.AppendElement(nil, resumed, xmlstream.NSClient), true)
	srv.router.Bind(c.ctx, s)
	s.mu.Lock()
	c.writing = false
	s.kickLocked()
	s.mu.Unlock()
	if st.Presence != nil {
		// Contacts may have been told the session went away (its node died): the
		// presence goes out again as if the client had sent it.
		p := st.Presence.Copy()
		p.SetAttr("from", s.jidString())
		if !srv.router.Run(c.ctx, module.EvC2SIn, &module.EventData{Stanza: p, From: s.jid, Session: s}) {
			s.SetPresence(p)
		}
	}
	c.log.Info("session resumed from another node", "jid", s.jid.String(), "queued", queued)
}

// Handover detaches the resumable session id of user for another node that is
// resuming it: it is unbound here without telling contacts it went away, its
// connection (if any) is closed, and its state with every unacknowledged stanza
// is returned. ErrNoSession if this node does not hold it.
func (srv *Server) Handover(ctx context.Context, id, user string) (*SMState, error) {
	s := srv.takeResumable(id)
	if s == nil || s.jid.Local != user {
		return nil, ErrNoSession
	}
	s.mu.Lock()
	if s.terminated || s.moving {
		s.mu.Unlock()
		return nil, ErrNoSession
	}
	s.moving = true
	pres := s.presence
	s.presence = nil // unbinding must not announce it unavailable
	s.mu.Unlock()
	srv.router.Unbind(ctx, s)
	s.mu.Lock()
	st := s.snapshotLocked()
	st.Presence = pres
	st.Queue = s.unacked
	s.unacked, s.held, s.queue = nil, nil, nil
	s.terminated = true
	s.unbound = true // unbound above: a stanza still handed to it is routed again (to the new node)
	old := s.c
	s.c = nil
	if s.detach != nil {
		s.detach.Stop()
	}
	if s.ka != nil {
		s.ka.Stop()
	}
	s.mu.Unlock()
	if old != nil {
		old.closeRaw()
	}
	srv.dropResumable(id, s)
	if s.repl != nil {
		s.repl.Ended(id)
	}
	srv.log.Info("session handed over to another node", "jid", s.jid.String(), "queued", len(st.Queue))
	return st, nil
}

// DetachResumable closes the connection of every session that can be resumed
// without ending the sessions: their clients reconnect and resume (on this or,
// with a replicator, on any node). It returns how many were detached.
func (srv *Server) DetachResumable() int {
	srv.mu.Lock()
	var ss []*session
	for _, s := range srv.resumable {
		ss = append(ss, s)
	}
	srv.mu.Unlock()
	n := 0
	for _, s := range ss {
		s.mu.Lock()
		c := s.c
		s.mu.Unlock()
		if c != nil {
			c.closeRaw()
			n++
		}
	}
	return n
}

// SetDraining refuses new connections (on) with <system-shutdown/>, or accepts
// them again (off). While draining, a resumable session closed with
// <see-other-host/> or <system-shutdown/> stays resumable (with a replicator,
// on any node).
func (srv *Server) SetDraining(on bool) {
	srv.mu.Lock()
	srv.draining = on
	srv.mu.Unlock()
}

// SeeOtherHost reports that Close("see-other-host", "host:port") puts the host
// into the <see-other-host/> element (RFC 6120 §4.9.3.19).
func (srv *Server) SeeOtherHost() bool { return true }

func (srv *Server) isDraining() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.draining
}

// SyncReplicas returns once what this node's resumable sessions have queued so
// far is on at least one other node (at once without a replicator). The
// cluster router may call it before acknowledging stanzas forwarded from
// another node, so a sender on another node is covered when this node dies.
func (srv *Server) SyncReplicas(ctx context.Context) error {
	if srv.repl == nil {
		return nil
	}
	return srv.repl.Sync(ctx)
}
