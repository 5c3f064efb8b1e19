package c2s

import (
	"context"
	"strconv"
	"sync"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/router"
	"xedge/xmppd/xmlstream"
)

// Namespaces handled here.
const (
	nsSM      = "urn:xmpp:sm:3"
	nsCSI     = "urn:xmpp:csi:0"
	nsStreams = "urn:ietf:params:xml:ns:xmpp-streams"
	nsSASL    = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsTLS     = "urn:ietf:params:xml:ns:xmpp-tls"
	nsBind    = "urn:ietf:params:xml:ns:xmpp-bind"
	nsSession = "urn:ietf:params:xml:ns:xmpp-session"
	nsReg     = "jabber:iq:register"
	nsRegFeat = "http://jabber.org/features/iq-register"
	nsCaps    = "http://jabber.org/protocol/caps"
	nsDelay   = "urn:xmpp:delay"
)

// maxHeld bounds what CSI holds back for an inactive client before flushing anyway.
const maxHeld = 500

type outItem struct {
	st    *xmlstream.Element
	raw   []byte
	final bool // close the connection after writing this
}

// session is a bound resource: it outlives its connection while XEP-0198 resumption
// is possible. It implements module.Session.
type session struct {
	srv   *Server
	id    string
	jid   jid.JID
	jidS  string // jid.String(), set at bind
	addr  string
	since time.Time
	mech  string
	tls   bool

	mu         sync.Mutex
	c          *conn // attached connection, nil while detached
	queue      []outItem
	closing    bool // a final stream error is queued or the stream is ending: no resumption
	terminated bool
	moving     bool                 // being handed over to another node (Handover)
	unbound    bool                 // terminated and unbound: a stanza still handed to it is routed again at once
	late       []*xmlstream.Element // handed to it while terminate was unbinding it (rerouted by terminate)
	keep       bool                 // closed by a draining node: stays resumable
	repl       Replicator           // non-nil: resumable and replicated to other nodes
	presence   *xmlstream.Element
	prio       int
	interested bool
	values     map[any]any

	// XEP-0198
	smEnabled bool
	smResume  bool
	smID      string
	hIn       uint32
	outCount  uint32
	unacked   []*xmlstream.Element
	rPending  bool
	detach    *time.Timer
	ka        *time.Timer // whitespace keepalive
	lastWrite time.Time

	// XEP-0352
	inactive bool
	held     []*xmlstream.Element
}

func (s *session) ID() string { return s.id }

// jidString is s.jid.String() without building it on every stanza.
func (s *session) jidString() string {
	if s.jidS != "" {
		return s.jidS
	}
	return s.jid.String()
}

func (s *session) JID() jid.JID { return s.jid }

func (s *session) Presence() *xmlstream.Element {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.presence
}

func (s *session) SetPresence(p *xmlstream.Element) {
	prio := 0
	if p != nil {
		if v, err := strconv.Atoi(p.ChildText("", "priority")); err == nil && v >= -128 && v <= 127 {
			prio = v
		}
		p = p.Copy()
	}
	s.mu.Lock()
	s.presence, s.prio = p, prio
	s.replPutLocked()
	s.mu.Unlock()
}

func (s *session) Priority() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prio
}

func (s *session) Interested() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.interested
}

func (s *session) SetInterested() {
	s.mu.Lock()
	s.interested = true
	s.replPutLocked()
	s.mu.Unlock()
}

func (s *session) Value(k any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.values[k]
}

func (s *session) SetValue(k, v any) {
	s.mu.Lock()
	if s.values == nil {
		s.values = map[any]any{}
	}
	s.values[k] = v
	s.mu.Unlock()
}

// Info implements router.Describer.
func (s *session) Info() router.SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	csi := "active"
	if s.inactive {
		csi = "inactive"
	}
	return router.SessionInfo{JID: s.jid.String(), ID: s.id, Addr: s.addr, Since: s.since, TLS: s.tls, Mech: s.mech,
		Priority: s.prio, SM: s.smEnabled, Detached: s.c == nil && !s.terminated, CSI: csi}
}

// urgent reports whether a stanza must reach an inactive (CSI, XEP-0352) client
// at once. What waits is what ejabberd's mod_client_state queues: presence,
// standalone chat states (XEP-0085) and PEP notifications (pubsub#event), also
// inside a carbon copy. Everything else goes out at once: IQs, a message with a
// body or subject, an error, and the body-less messages a client acts on — a
// delivery receipt (XEP-0184), a displayed marker (XEP-0333), a call proposal
// (XEP-0353), an OMEMO key transport — and payloads this server does not know.
func urgent(st *xmlstream.Element) bool {
	switch st.Local {
	case "presence":
		return false
	case "message":
		return !deferrable(st, 0)
	}
	return true
}

const (
	nsChatStates  = "http://jabber.org/protocol/chatstates"
	nsPubSubEvent = "http://jabber.org/protocol/pubsub#event"
	nsCarbons     = "urn:xmpp:carbons:2"
	nsForward     = "urn:xmpp:forward:0"
)

// deferrable reports whether message m carries only what an inactive client can
// receive later: a chat state or a PEP notification, beside the metadata that
// travels with any message (thread, stanza and origin IDs, delay, hints). A
// carbon copy is judged by the message it carries (depth bounds the nesting).
func deferrable(m *xmlstream.Element, depth int) bool {
	if m.Attr("type") == "error" || depth > 1 {
		return false
	}
	payload := false
	for _, c := range m.Children() {
		switch c.Space {
		case nsChatStates, nsPubSubEvent:
			payload = true
		case nsCarbons:
			if c.Local != "sent" && c.Local != "received" {
				return false
			}
			var inner *xmlstream.Element
			if fw := c.Child(nsForward, "forwarded"); fw != nil {
				inner = fw.Child("", "message")
			}
			if inner == nil || !deferrable(inner, depth+1) {
				return false
			}
			payload = true
		case "urn:xmpp:sid:0", nsDelay, "urn:xmpp:hints":
		case xmlstream.NSClient, "":
			if c.Local != "thread" {
				return false // body, subject, or an unknown child
			}
		default:
			return false
		}
	}
	return payload
}

// Send implements module.Session: it queues without blocking; a client whose queue
// overflows is disconnected with <policy-violation/>.
//
// With stream management the sender may already have been told the stanza
// arrived (the bus acknowledges a stanza handed to a session), so a session that
// is closing or ended does not drop it: closing (its stream error still on its
// way, the session still bound), it is kept with the unacknowledged stanzas,
// which go to a resumption or are rerouted when the session ends; ended, it is
// routed again (another resource, offline storage, or a bounce).
func (s *session) Send(st *xmlstream.Element) {
	s.mu.Lock()
	if s.terminated || s.closing {
		s.sendLateLocked(st) // unlocks
		return
	}
	defer s.mu.Unlock()
	if s.inactive && !urgent(st) {
		s.holdLocked(st)
		return
	}
	if s.inactive && len(s.held) > 0 {
		s.flushHeldLocked() // keep order: held stanzas first
	}
	s.enqueueLocked(st)
}

// sendLateLocked handles a stanza handed to a closing or terminated session (see
// Send) and unlocks s.mu. Without stream management it is dropped as before: the
// client never acknowledges anything.
func (s *session) sendLateLocked(st *xmlstream.Element) {
	switch {
	case !s.smEnabled:
	case !s.terminated: // closing: no more output, but kept (and replicated) like any unacknowledged stanza
		s.outCount++
		s.unacked = append(s.unacked, st)
		if s.repl != nil {
			s.repl.Queued(s.smID, s.outCount, st)
		}
	case !s.unbound: // terminate is unbinding it: rerouted by terminate, once unbound
		s.late = append(s.late, st)
	default:
		s.mu.Unlock()
		s.reroute(context.Background(), []*xmlstream.Element{st})
		return
	}
	s.mu.Unlock()
}

// holdLocked keeps a non-urgent stanza for an inactive client; a newer presence from
// the same sender replaces the older one.
func (s *session) holdLocked(st *xmlstream.Element) {
	if st.Local == "presence" {
		from := st.Attr("from")
		for i, h := range s.held {
			if h.Local == "presence" && h.Attr("from") == from {
				s.held = append(s.held[:i], s.held[i+1:]...)
				break
			}
		}
	}
	s.held = append(s.held, st)
	if len(s.held) > maxHeld {
		s.flushHeldLocked()
	}
}

func (s *session) flushHeldLocked() {
	held := s.held
	s.held = nil
	for _, h := range held {
		s.enqueueLocked(h)
		if s.closing {
			return
		}
	}
}

func (s *session) enqueueLocked(st *xmlstream.Element) {
	if s.smEnabled {
		s.outCount++
		s.unacked = append(s.unacked, st)
		if s.repl != nil {
			s.repl.Queued(s.smID, s.outCount, st)
		}
		if len(s.unacked) > s.srv.cfg.SMMaxQueue {
			s.closeLocked("policy-violation", "too many unacknowledged stanzas")
			return
		}
	}
	if s.c == nil {
		return // detached: kept in unacked and resent on resumption
	}
	s.queue = append(s.queue, outItem{st: st})
	if len(s.queue) > s.srv.cfg.SendQueue {
		s.srv.log.Warn("client does not read fast enough; disconnecting", "jid", s.jid.String(), "queued", len(s.queue))
		s.closeLocked("policy-violation", "too many stanzas queued for this client")
		return
	}
	s.kickLocked()
}

// queueRaw queues a nonza (SM <a/>, <r/>, <enabled/>).
func (s *session) queueRaw(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil || s.closing {
		return
	}
	s.queue = append(s.queue, outItem{raw: b})
	s.kickLocked()
}

// Close implements module.Session: it ends the stream with a stream error (or a clean
// close for ""), without resumption.
func (s *session) Close(condition, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(condition, text)
}

func (s *session) closeLocked(condition, text string) {
	if s.closing || s.terminated {
		return
	}
	if s.smResume && s.c != nil && (condition == "see-other-host" || condition == "system-shutdown") && s.srv.isDraining() {
		s.keep = true // the client resumes on another node
	}
	s.closing = true
	if s.c == nil {
		go safely(s.srv.log, s.terminate)
		return
	}
	var b []byte
	if condition != "" {
		b = appendStreamError(nil, condition, text)
	}
	b = append(b, xmlstream.StreamClose...)
	// The final item goes after what is queued, bounded by a short write deadline
	// (a client that does not read loses the rest; with SM it is rerouted).
	s.queue = append(s.queue, outItem{raw: b, final: true})
	s.c.closeWithin(5 * time.Second)
	s.kickLocked()
}

// markClosing stops further output and resumption (the reader is ending the stream).
func (s *session) markClosing() {
	s.mu.Lock()
	s.closing = true
	s.queue = nil
	s.mu.Unlock()
}

// ack processes an XEP-0198 <a h=.../>.
func (s *session) ack(h uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ackLocked(h)
	s.rPending = false
}

func (s *session) ackLocked(h uint32) {
	first := s.outCount - uint32(len(s.unacked)) // count acknowledged so far
	n := h - first
	if n > uint32(len(s.unacked)) {
		n = uint32(len(s.unacked)) // more than sent: ignore the excess
	}
	for i := uint32(0); i < n; i++ {
		s.unacked[i] = nil
	}
	s.unacked = s.unacked[n:]
	if s.repl != nil && n > 0 {
		s.repl.Acked(s.smID, first+n)
	}
}

// kickLocked starts a writer for the attached connection if none runs. Writers
// exist only while there is something to write, so an idle session costs no
// goroutine besides its reader; they run on the server's writer pool.
func (s *session) kickLocked() {
	if s.c == nil || s.c.writing || len(s.queue) == 0 {
		return
	}
	s.c.writing = true
	s.srv.writers.run(s, s.c)
}

// writeBufs recycles the writers' output buffers (an idle session holds none).
var writeBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledWrite bounds the buffers kept for reuse.
const maxPooledWrite = 64 << 10

// writer drains the queue to c while c is the attached connection, then exits. All
// that is queued when it wakes goes out in one write (one TLS record, one syscall).
func (s *session) writer(c *conn) {
	bp := writeBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledWrite {
			*bp = (*bp)[:0]
			writeBufs.Put(bp)
		}
	}()
	if err := c.flushSpill(); err != nil { // what the batch writer left
		s.mu.Lock()
		c.writing = false
		s.mu.Unlock()
		c.closeRaw()
		return
	}
	var spare []outItem // the previous batch's slice, reused while this writer runs
	for {
		s.mu.Lock()
		items, sendR, ok := s.takeLocked(c, spare)
		s.mu.Unlock()
		if !ok {
			return
		}
		buf, final := appendItems((*bp)[:0], items, sendR)
		*bp = buf
		clear(items)
		spare = items[:0]
		err := c.write(buf)
		s.mu.Lock()
		s.lastWrite = time.Now()
		if err != nil || final {
			c.writing = false
			s.mu.Unlock()
			c.closeRaw()
			return
		}
		s.mu.Unlock()
	}
}

// takeLocked takes what s has queued for c, leaving spare as the queue, and
// whether an SM request for acknowledgement goes with it. ok is false when
// there is nothing to write (c is no longer s's connection, or the queue is
// empty): then c's writer is done (c.writing cleared).
func (s *session) takeLocked(c *conn, spare []outItem) (items []outItem, sendR, ok bool) {
	if s.c != c || len(s.queue) == 0 {
		if s.c == c {
			s.queue = nil // an idle session keeps no queue
		}
		c.writing = false
		return nil, false, false
	}
	items, s.queue = s.queue, spare
	if s.smEnabled && len(s.unacked) > 0 && !s.rPending {
		sendR, s.rPending = true, true
	}
	return items, sendR, true
}

// appendItems appends the serialized items, and an SM request for acknowledgement
// (sendR) unless one of them ends the stream (final).
func appendItems(buf []byte, items []outItem, sendR bool) (_ []byte, final bool) {
	for _, it := range items {
		if it.st != nil {
			buf = fanoutEnc.appendStanza(buf, it.st)
		} else {
			buf = append(buf, it.raw...)
		}
		final = final || it.final
	}
	if sendR && !final {
		buf = append(buf, "<r xmlns='urn:xmpp:sm:3'/>"...)
	}
	return buf, final
}

// tryWrite is the batch writer's turn at s (writerpool.go, c.try set): it writes
// what s has queued for c in one write that never waits on the client. It returns
// true when s's writer is done (c.writing cleared), false when s's own writer must
// go on: the socket took only part (the rest is spilled, tryConn), more was queued
// meanwhile, another write held the connection, or the stream ends (the closing
// write is the writer's, with its deadline). now is the batch's clock.
func (s *session) tryWrite(c *conn, bp *[]byte, now time.Time) bool {
	s.mu.Lock()
	items, sendR, ok := s.takeLocked(c, nil)
	s.mu.Unlock()
	if !ok {
		return true
	}
	buf, final := appendItems((*bp)[:0], items, sendR)
	*bp = buf
	var spilled, written bool
	var err error
	if !final {
		spilled, written, err = c.tryWrite(buf, now)
	}
	s.mu.Lock()
	if !written { // nothing written: the items go back, first (unless c is no longer s's)
		if s.c == c {
			s.queue = append(items, s.queue...)
			if sendR {
				s.rPending = false
			}
		}
		s.mu.Unlock()
		return false
	}
	s.lastWrite = now
	if err != nil {
		c.writing = false
		s.mu.Unlock()
		c.closeRaw()
		return true
	}
	if spilled || len(s.queue) > 0 {
		s.mu.Unlock()
		return false
	}
	s.queue = nil
	c.writing = false
	s.mu.Unlock()
	return true
}

// keepalive runs on the session's timer: after Keepalive of output idleness it
// queues a whitespace keepalive (RFC 6120 §4.6.1).
func (s *session) keepalive() {
	ka := s.srv.cfg.Keepalive
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.terminated {
		return
	}
	next := ka
	if s.c != nil && !s.closing {
		if idle := time.Since(s.lastWrite); idle >= ka {
			s.queue = append(s.queue, outItem{raw: []byte{' '}})
			s.kickLocked()
		} else {
			next = ka - idle
		}
	}
	s.ka.Reset(next)
}

// attach makes c the session's connection; pre are raw bytes written first (e.g.
// <resumed/>), then, with resend, every unacknowledged stanza.
func (s *session) attach(c *conn, pre []byte, resend bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.c = c
	s.closing = false
	s.lastWrite = time.Now()
	if s.detach != nil {
		s.detach.Stop()
		s.detach = nil
	}
	s.queue = nil
	if pre != nil {
		s.queue = append(s.queue, outItem{raw: pre})
	}
	if resend {
		for _, st := range s.unacked {
			s.queue = append(s.queue, outItem{st: st})
		}
		s.rPending = false
	}
	if ka := s.srv.cfg.Keepalive; ka > 0 && s.ka == nil {
		s.ka = time.AfterFunc(ka, s.keepalive)
	}
	s.kickLocked()
}

// connEnded is called by c's reader when the connection is gone. clean means the
// stream was closed properly (or with a stream error): the session ends. Otherwise a
// resumable session is detached and waits for XEP-0198 resumption.
func (s *session) connEnded(c *conn, clean bool) {
	s.mu.Lock()
	if s.c != c {
		s.mu.Unlock()
		return // resumed on a newer connection
	}
	s.c = nil
	s.queue = nil
	if s.keep && !s.terminated {
		s.closing, s.keep, clean = false, false, false // sent away by a drain: resumable
	}
	if !clean && s.smResume && !s.closing && !s.terminated && s.srv.isStopping() && s.srv.leaveToPeersLocked(s) {
		s.mu.Unlock() // the node stops: other nodes hold the state and resume it
		return
	}
	if !clean && s.smResume && !s.closing && !s.terminated && !s.srv.isStopping() {
		s.detach = time.AfterFunc(s.srv.cfg.SMTimeout, func() { safely(s.srv.log, s.expireIfDetached) })
		s.mu.Unlock()
		s.publishDetached()
		s.srv.log.Info("connection lost; session kept for resumption", "jid", s.jid.String(), "for", s.srv.cfg.SMTimeout)
		return
	}
	s.mu.Unlock()
	s.terminate()
}

// expireIfDetached ends a session still waiting for resumption.
func (s *session) expireIfDetached() {
	s.mu.Lock()
	detached := s.c == nil
	s.mu.Unlock()
	if detached {
		s.terminate()
	}
}

// terminate unbinds the session and hands its unacknowledged stanzas back to the
// router: messages are routed again (to another resource, or offline storage),
// IQ requests are answered with <service-unavailable/>.
func (s *session) terminate() {
	s.mu.Lock()
	if s.terminated || s.moving {
		s.mu.Unlock()
		return
	}
	s.terminated = true
	if s.detach != nil {
		s.detach.Stop()
	}
	if s.ka != nil {
		s.ka.Stop()
	}
	unacked := s.unacked
	s.unacked, s.held, s.queue = nil, nil, nil
	smID := s.smID
	s.mu.Unlock()
	if smID != "" {
		s.srv.dropResumable(smID, s)
		if s.repl != nil {
			s.repl.Ended(smID)
		}
	}
	ctx := context.Background()
	s.srv.router.Unbind(ctx, s)
	s.mu.Lock()
	unacked = append(unacked, s.late...)
	s.late, s.unbound = nil, true
	s.mu.Unlock()
	s.reroute(ctx, unacked)
	if len(unacked) > 0 {
		s.srv.log.Info("session ended with unacknowledged stanzas; rerouted", "jid", s.jid.String(), "count", len(unacked))
	}
}

// reroute routes stanzas the client of an ended session did not acknowledge:
// messages again (to another resource, or offline storage, with a delay stamp),
// IQ requests answered with <service-unavailable/>.
func (s *session) reroute(ctx context.Context, stanzas []*xmlstream.Element) {
	for _, st := range stanzas {
		switch st.Local {
		case "message":
			if st.Attr("type") != "error" && st.Attr("type") != "groupchat" {
				st = st.Copy()
				if st.Child(nsDelay, "delay") == nil {
					st.Append(xmlstream.New(nsDelay, "delay", "from", s.jid.Domain, "stamp", time.Now().UTC().Format("2006-01-02T15:04:05Z")))
				}
				s.srv.router.Route(ctx, st)
			}
		case "iq":
			if t := st.Attr("type"); t == "get" || t == "set" {
				s.srv.router.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", ""))
			}
		}
	}
}

func (s *Server) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

func appendStreamError(b []byte, condition, text string) []byte {
	e := xmlstream.New(xmlstream.NSStream, "error")
	if condition == "see-other-host" && text != "" {
		// RFC 6120 §4.9.3.19: the other host goes into the condition element.
		e.Append(xmlstream.New(nsStreams, condition).AppendText(text))
		return xmlstream.AppendElement(b, e, xmlstream.NSClient)
	}
	e.Append(xmlstream.New(nsStreams, condition))
	if text != "" {
		e.Append(xmlstream.New(nsStreams, "text").AppendText(text))
	}
	return xmlstream.AppendElement(b, e, xmlstream.NSClient)
}
