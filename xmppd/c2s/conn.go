package c2s

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

const (
	writeTimeout = 30 * time.Second
	writeSlack   = 5 * time.Second
)

// maxParks bounds the idle waits in one call of next (each needs input to end).
const maxParks = 1 << 16

// streamErr is a stream-level error to send before closing (RFC 6120 §4.9).
type streamErr struct{ cond, text string }

func (e *streamErr) Error() string { return "stream error " + e.cond + ": " + e.text }

func serr(cond, text string) error { return &streamErr{cond, text} }

// conn is one client TCP connection and its reader loop.
type conn struct {
	srv       *Server
	raw       net.Conn // the TCP connection
	directTLS bool
	regOK     bool     // in-band registration is offered on this stream's listener for its host
	lnAddr    net.Addr // the listener's address (nil: ServeConn)
	// vhost is the stream's host (virtual hosting): the default host until the
	// SNI name or the stream header's to names another. Written by the reader
	// under wmu (appendHeader reads it from other goroutines).
	vhost *hostState
	ip    string
	log   connLog

	// ctx is the connection's context: cancelled when the connection closes or
	// the server stops, so no stanza handler keeps running for a dead stream.
	ctx    context.Context
	cancel context.CancelFunc

	wmu sync.Mutex
	nc  net.Conn // shaped raw connection or TLS over it
	// try is raw as the layers above see it when raw is a socket the batch
	// writer can write to without waiting (tryconn.go); nil otherwise.
	try *tryConn
	wdl time.Time // write deadline set by write
	// closeBy is the write deadline (Unix ns) of a stream the server is closing
	// (closeWithin); 0 while open. write does not re-arm past it.
	closeBy    atomic.Int64
	headerSent bool

	dec      *xmlstream.Decoder
	rd       connReader // the decoder's input (idle.go)
	noPark   bool       // idle streams cannot wait without the decoder here
	secure   bool
	authed   bool
	user     string
	mech     string
	streamID string
	authEnd  time.Time

	sess    *session
	writing bool // a writer goroutine runs (guarded by sess.mu)

	// Parking with the poller (drive, poller_linux.go).
	noAsync   bool        // the poller refused this stream: park in its goroutine
	exchange  bool        // inside a multi-step exchange (SASL): never hand the stream to the poller
	resumed   bool        // the next call of next continues the one that parked
	parkOff   int64       // the decoder's input offset when that call began
	parkID    uint64      // registration with the poller (guarded by its mutex)
	parkTimer *time.Timer // wakes the parked stream at its read deadline (same)
}

func newConn(s *Server, nc net.Conn, directTLS bool) *conn {
	ip := nc.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	c := &conn{srv: s, raw: nc, directTLS: directTLS, ip: ip, streamID: randomID()}
	c.vhost = s.host(s.cfg.Domain)
	c.regOK = s.registrationOn(nil, c.vhost) // accept decides by its listener's address
	c.log = connLog{l: s.log, remote: nc.RemoteAddr().String()}
	c.ctx, c.cancel = context.WithCancel(s.baseCtx)
	c.try = newTryConn(nc)
	c.shape(s.cfg.Shaper)
	c.rd.c = c
	return c
}

// write writes b under the write lock with a deadline of writeTimeout (re-armed
// only once writeSlack of it has passed: one call less per write).
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.armLocked()
	_, err := c.nc.Write(b)
	return err
}

// armLocked re-arms the write deadline (under wmu).
func (c *conn) armLocked() { c.armAt(time.Now()) }

// armAt is armLocked with the time read by the caller (at most a batch's
// length ago, far less than writeSlack).
func (c *conn) armAt(now time.Time) {
	if c.closeBy.Load() == 0 && c.wdl.Sub(now) < writeTimeout-writeSlack {
		c.wdl = now.Add(writeTimeout)
		c.nc.SetWriteDeadline(c.wdl)
		// closeWithin may have set its deadline between the check and this one.
		if by := c.closeBy.Load(); by != 0 {
			c.wdl = time.Unix(0, by)
			c.nc.SetWriteDeadline(c.wdl)
		}
	}
}

// tryWrite writes b without waiting on the client (c.try must be set): what the
// socket does not take at once is spilled (tryConn) for the session's writer,
// and spilled says so. ok is false, and nothing is written, when another write
// holds the connection.
func (c *conn) tryWrite(b []byte, now time.Time) (spilled, ok bool, err error) {
	if !c.wmu.TryLock() {
		return false, false, nil
	}
	defer c.wmu.Unlock()
	c.armAt(now)
	c.try.setTry(true)
	_, err = c.nc.Write(b)
	c.try.setTry(false)
	return c.try.pending(), true, err
}

// flushSpill writes what tryWrite spilled, waiting as write does.
func (c *conn) flushSpill() error {
	if c.try == nil || !c.try.pending() {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.armLocked()
	return c.try.flush()
}

// closeWithin bounds every write from now on, the one under way included, to d:
// the stream is being closed and a client that does not read must not keep it
// (write would otherwise re-arm its 30 s deadline). It does not wait for wmu,
// which a blocked write holds.
func (c *conn) closeWithin(d time.Duration) {
	by := time.Now().Add(d)
	c.closeBy.Store(by.UnixNano())
	c.raw.SetWriteDeadline(by)
}

func (c *conn) writeElem(e *xmlstream.Element) error {
	return c.write(xmlstream.AppendElement(nil, e, xmlstream.NSClient))
}

// sendStreamError writes (our stream header if not yet sent,) the stream error and
// the closing tag, then closes the connection.
func (c *conn) sendStreamError(cond, text string) {
	c.wmu.Lock()
	var b []byte
	if !c.headerSent {
		b = c.appendHeader(b)
		c.headerSent = true
	}
	b = appendStreamError(b, cond, text)
	b = append(b, xmlstream.StreamClose...)
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.nc.Write(b)
	c.wmu.Unlock()
	c.closeRaw()
}

// shutdown ends the stream from another goroutine (server stop).
func (c *conn) shutdown(cond, text string) {
	if s := c.session(); s != nil {
		s.Close(cond, text)
		return
	}
	c.sendStreamError(cond, text)
}

func (c *conn) session() *session {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sess
}

func (c *conn) appendHeader(b []byte) []byte {
	return xmlstream.AppendStreamHeader(b, xmlstream.NSClient,
		xmlstream.Attr{Local: "from", Value: c.vhost.Domain},
		xmlstream.Attr{Local: "id", Value: c.streamID},
		xmlstream.Attr{Local: "version", Value: "1.0"},
		xmlstream.Attr{Space: xmlstream.NSXML, Local: "lang", Value: "en"})
}

// serve runs a new connection until it ends or parks (then a new goroutine resumes
// it: drive). A panic while handling this stream (in the core or a module) ends
// only this stream, with <internal-server-error/>.
func (c *conn) serve() { c.drive(true) }

// errPark asks drive to park the stream with the server's poller (poller_linux.go):
// the decoder is between elements, holds no buffers, and nothing arrived within
// Config.ParkAfter.
var errPark = errors.New("c2s: park the stream")

// errNoStream ends a connection that never got a stream (direct TLS handshake failed).
var errNoStream = errors.New("c2s: no stream")

// drive runs the stream from where it stands (start: a new connection; otherwise
// after a park) until it ends, or until it is parked: then it returns at once and
// the poller starts drive again on input, a deadline or a close.
func (c *conn) drive(start bool) {
	for {
		err, panicked := c.runSafely(start)
		start = false
		switch {
		case panicked:
		case errors.Is(err, errPark):
			switch c.srv.poller.park(c) {
			case parkOK:
				return // c belongs to the poller now: touch nothing
			case parkUnsupported:
				c.noAsync = true // wait in this goroutine from now on
			}
			c.unparked()
			continue
		case errors.Is(err, errNoStream):
		default:
			c.finish(err)
		}
		c.closeRaw()
		c.srv.connGone(c)
		return
	}
}

// unpark resumes a parked stream in a new goroutine (started by the poller).
func (c *conn) unpark() {
	c.unparked()
	c.drive(false)
}

// unparked prepares the decoder to read again after a park.
func (c *conn) unparked() {
	c.dec.Reacquire()
	c.rd.woke = true // the next read goes to the socket: input, EOF or the deadline
	c.resumed = true
}

// runSafely runs (or resumes) the state machine and turns a panic into an
// <internal-server-error/> stream error.
func (c *conn) runSafely(start bool) (err error, panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			panicked = true
			c.log.Error("panic while handling a stream; closing it", "panic", p, "jid", c.jidString(), "stack", string(debug.Stack()))
			c.sendStreamError("internal-server-error", "")
			if s := c.sess; s != nil {
				s.markClosing()
				safely(c.srv.log, func() { s.connEnded(c, true) })
			}
		}
	}()
	if start {
		c.authEnd = time.Now().Add(c.srv.cfg.AuthTimeout)
		if c.directTLS {
			if err := c.handshake(); err != nil {
				c.log.Debug("direct TLS handshake failed", "err", err)
				return errNoStream, false
			}
		}
		c.dec = xmlstream.NewDecoder(&c.rd, c.srv.cfg.Limits)
		if err := c.openStream(); err != nil {
			return err, false
		}
	}
	return c.run(), false
}

// closeRaw closes the TCP connection and wakes its reader if it is parked.
func (c *conn) closeRaw() {
	c.cancel()
	c.raw.Close()
	c.srv.poller.wake(c)
}

// finish ends the connection after run returned err. (Kept out of serve, whose frame
// stays on every idle reader's stack: see idle.go.)
func (c *conn) finish(err error) {
	clean := false
	var se *streamErr
	var xe *xmlstream.Error
	switch {
	case err == nil || errors.Is(err, io.EOF):
		// The client closed its stream: close ours.
		c.write([]byte(xmlstream.StreamClose))
		clean = true
	case errors.As(err, &se):
		c.log.Info("stream error", "condition", se.cond, "reason", se.text, "jid", c.jidString())
		if s := c.sess; s != nil {
			s.markClosing()
		}
		c.sendStreamError(se.cond, se.text)
		clean = true
	case errors.As(err, &xe):
		c.log.Info("stream error from the XML layer", "condition", xe.Condition, "reason", xe.Text, "jid", c.jidString())
		if s := c.sess; s != nil {
			s.markClosing()
		}
		c.sendStreamError(xe.Condition, "")
		clean = true
	default:
		c.log.Debug("connection ended", "err", err, "jid", c.jidString())
	}
	c.closeRaw()
	if s := c.sess; s != nil {
		s.connEnded(c, clean)
	}
}

func (c *conn) jidString() string {
	if c.sess != nil {
		return c.sess.jid.String()
	}
	return c.user
}

func (c *conn) handshake() error {
	c.rd.arm(c.rd.deadline) // not a grace deadline the reader left armed
	tc := tls.Server(c.nc, c.vhost.tls)
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	ackNow(c.raw)
	c.wmu.Lock()
	c.nc = tc
	// The SNI name picks the host of a stream whose header names none.
	if h := c.srv.host(tc.ConnectionState().ServerName); h != nil && !c.authed {
		c.vhost = h
	}
	c.wmu.Unlock()
	c.secure = true
	return nil
}

// next reads the next top-level element, applying the idle timeout (and the
// authentication deadline before binding). Whitespace keepalives and partial input
// count as activity.
func (c *conn) next(header bool) (*xmlstream.Element, error) {
	resumed := c.resumed && !header
	c.resumed = false
	for {
		var off int64
		bound := c.sess != nil
		if resumed {
			// After a park: the same deadline and activity mark as before it.
			resumed = false
			off = c.parkOff
		} else {
			limit := c.srv.cfg.IdleTimeout
			if !bound {
				if left := time.Until(c.authEnd); left <= 0 {
					return nil, serr("connection-timeout", "authentication took too long")
				} else if limit <= 0 || left < limit {
					limit = left
				}
			}
			var deadline time.Time
			if limit > 0 {
				deadline = time.Now().Add(limit)
			}
			c.rd.deadline = deadline // armed on c.raw by the reader as needed
			off = c.dec.InputOffset()
		}
		var el *xmlstream.Element
		var err error
		if header {
			c.rd.park = false
			el, err = c.dec.StreamHeader()
		} else {
			// Between stanzas the reader parks without the decoder's buffer (idle.go):
			// with the poller, by handing the stream to it (errPark: this goroutine
			// ends); otherwise here, until input (or an error) for one real read.
			for i := 0; i < maxParks; i++ {
				c.rd.park = !c.noPark && i < maxParks-1
				el, err = c.dec.Next()
				if err == nil || !errors.Is(err, errIdle) {
					break
				}
				if !c.noAsync && !c.exchange && c.srv.poller != nil {
					c.rd.park = false
					c.dec.ReleaseBuffers()
					c.parkOff = off
					return nil, errPark
				}
				if err = c.park(); err != nil {
					break
				}
			}
			c.rd.park = false
		}
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if c.dec.InputOffset() != off {
				continue // data is arriving (keepalive or a slow stanza)
			}
			if !bound && time.Until(c.authEnd) <= 0 {
				return nil, serr("connection-timeout", "authentication took too long")
			}
			return nil, serr("connection-timeout", "idle for too long")
		}
		return el, err
	}
}

// openStream reads the client's stream header and answers with ours and the features.
func (c *conn) openStream() error {
	// A new stream (also after a restart): a stream error before our header is
	// preceded by a fresh header.
	c.wmu.Lock()
	c.headerSent = false
	c.streamID = randomID()
	c.wmu.Unlock()
	hdr, err := c.next(true)
	if err != nil {
		return err
	}
	if hdr.Space != xmlstream.NSStream || hdr.Local != "stream" {
		return serr("invalid-namespace", "expected a stream:stream element")
	}
	if ns := c.dec.DefaultNS(); ns != xmlstream.NSClient {
		return serr("invalid-namespace", "the default namespace must be jabber:client")
	}
	if to := hdr.Attr("to"); to != "" {
		// The stream's host (RFC 6120 §4.7.2): one this server serves, and after
		// authentication the one the client authenticated with.
		j, err := jid.Parse(to)
		var h *hostState
		if err == nil && j.IsServer() {
			h = c.srv.host(j.Domain)
		}
		if h == nil || (c.authed && h != c.vhost) {
			return serr("host-unknown", "this server does not serve "+to)
		}
		if h != c.vhost {
			c.wmu.Lock()
			c.vhost = h
			c.wmu.Unlock()
		}
	}
	c.regOK = c.srv.registrationOn(c.lnAddr, c.vhost)
	if v := hdr.Attr("version"); v == "" || !strings.HasPrefix(v, "1.") {
		return serr("unsupported-version", "XMPP 1.0 streams only")
	}
	c.wmu.Lock()
	b := c.appendHeader(nil)
	c.headerSent = true
	c.wmu.Unlock()
	b = xmlstream.AppendElement(b, c.features(), xmlstream.NSClient)
	return c.write(b)
}

func (c *conn) state() module.StreamState {
	return module.StreamState{Secure: c.secure, Authenticated: c.authed, Bound: c.sess != nil}
}

func (c *conn) features() *xmlstream.Element {
	f := xmlstream.New(xmlstream.NSStream, "features")
	switch {
	case !c.secure && !c.srv.cfg.AllowPlaintext:
		f.Append(xmlstream.New(nsTLS, "starttls").Append(xmlstream.New(nsTLS, "required")))
	case !c.authed:
		if !c.secure {
			f.Append(xmlstream.New(nsTLS, "starttls"))
		}
		m := xmlstream.New(nsSASL, "mechanisms")
		for _, mech := range c.mechanisms() { // PLAIN only under TLS
			m.Append(xmlstream.New(nsSASL, "mechanism").AppendText(mech))
		}
		f.Append(m)
		if c.regOK && c.secure {
			f.Append(xmlstream.New(nsRegFeat, "register"))
		}
	default:
		f.Append(xmlstream.New(nsBind, "bind"))
		f.Append(xmlstream.New(nsSession, "session").Append(xmlstream.New(nsSession, "optional")))
		f.Append(xmlstream.New(nsSM, "sm"))
		f.Append(xmlstream.New(nsCSI, "csi"))
	}
	if c.secure || c.srv.cfg.AllowPlaintext {
		f.Append(c.srv.capsElement())
	}
	for _, e := range c.srv.router.Features(c.state()) {
		f.Append(e)
	}
	return f
}

// run drives the state machine of an open stream until it ends (or parks: errPark).
func (c *conn) run() error {
	for {
		el, err := c.next(false)
		if err != nil {
			return err
		}
		if err := c.dispatch(el); err != nil {
			return err
		}
	}
}

// dispatch handles one top-level element in the stream's current state.
func (c *conn) dispatch(el *xmlstream.Element) error {
	if el.Space == xmlstream.NSStream && el.Local == "error" {
		// The client ends the stream with an error: close ours (RFC 6120 §4.9.1.1).
		c.log.Info("client sent a stream error", "condition", condOf(el), "jid", c.jidString())
		return io.EOF
	}
	switch {
	case !c.secure && !c.srv.cfg.AllowPlaintext && !c.authed:
		return c.preTLS(el)
	case !c.authed:
		return c.preAuth(el)
	case c.sess == nil:
		return c.preBind(el)
	default:
		return c.established(el)
	}
}

// starttls upgrades the connection and restarts the stream.
func (c *conn) starttls() error {
	if err := c.writeElem(xmlstream.New(nsTLS, "proceed")); err != nil {
		return err
	}
	if err := c.handshake(); err != nil {
		c.log.Debug("STARTTLS handshake failed", "err", err)
		return err
	}
	c.rd.reset()
	c.dec.Reset(&c.rd)
	return c.openStream()
}

func (c *conn) preTLS(el *xmlstream.Element) error {
	switch {
	case el.Space == nsTLS && el.Local == "starttls":
		return c.starttls()
	case el.Space == nsSASL && el.Local == "auth":
		// PLAIN (and everything else) only after TLS.
		return c.saslFailure("encryption-required", "use STARTTLS first")
	}
	return serr("not-authorized", "STARTTLS is required before anything else")
}

func (c *conn) preAuth(el *xmlstream.Element) error {
	switch {
	case el.Space == nsSASL && el.Local == "auth":
		return c.sasl(el)
	case el.Space == nsTLS && el.Local == "starttls":
		if !c.secure {
			return c.starttls()
		}
		c.writeElem(xmlstream.New(nsTLS, "failure"))
		return serr("policy-violation", "TLS is already on")
	case el.Space == xmlstream.NSClient && el.Local == "iq" && el.Child(nsReg, "query") != nil:
		if !c.regOK {
			// XEP-0077 §3.1: registration not offered (disabled, or not on this listener).
			if c.srv.cfg.AllowRegistration {
				return c.writeElem(iqError(el, module.ErrCancel, "not-allowed", "in-band registration is not offered on this listener"))
			}
			return c.writeElem(iqError(el, module.ErrCancel, "service-unavailable", "in-band registration is disabled"))
		}
		if !c.secure { // a password must not cross the network in clear
			return c.writeElem(iqError(el, module.ErrModify, "policy-violation", "use STARTTLS before registering"))
		}
		return c.register(el)
	}
	return serr("not-authorized", "authenticate first")
}

func (c *conn) preBind(el *xmlstream.Element) error {
	switch {
	case el.Space == xmlstream.NSClient && el.Local == "iq" && el.Attr("type") == "set" && el.Child(nsBind, "bind") != nil:
		return c.bind(el)
	case el.Space == nsSM && el.Local == "resume":
		return c.resume(el)
	case el.Space == nsSM && el.Local == "enable":
		return c.writeElem(smFailed("unexpected-request"))
	}
	return serr("not-authorized", "bind a resource first")
}

func smFailed(cond string) *xmlstream.Element {
	return xmlstream.New(nsSM, "failed").Append(xmlstream.New(module.NSStanzas, cond))
}

func (c *conn) saslFailure(cond, text string) error {
	f := xmlstream.New(nsSASL, "failure").Append(xmlstream.New(nsSASL, cond))
	if text != "" {
		f.Append(xmlstream.New(nsSASL, "text").AppendText(text))
	}
	return c.writeElem(f)
}

func decodeSASL(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "=" {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

func iqError(st *xmlstream.Element, typ, cond, text string) *xmlstream.Element {
	return module.Error(st, typ, cond, text)
}

// bind binds a resource (RFC 6120 §7): client-chosen or server-generated. An existing
// session with the same full JID is replaced (the router closes it with <conflict/>).
func (c *conn) bind(iq *xmlstream.Element) error {
	res := strings.TrimSpace(iq.Child(nsBind, "bind").ChildText(nsBind, "resource"))
	if res == "" {
		res = "xmppd-" + randomID()[:12]
	}
	full, err := jid.New(c.user, c.vhost.Domain, res)
	if err != nil {
		return c.writeElem(iqError(iq, module.ErrModify, "bad-request", "invalid resource"))
	}
	ctx := c.ctx
	if ok, err := c.vhost.boundUserExists(ctx, c.user); err != nil || !ok {
		if err != nil {
			return c.writeElem(module.StoreError(iq, err))
		}
		return serr("not-authorized", "the account no longer exists")
	}
	s := &session{srv: c.srv, id: randomID(), jid: full, jidS: full.String(), addr: c.raw.RemoteAddr().String(), since: time.Now(), mech: c.mech, tls: c.secure}
	result := xmlstream.New(xmlstream.NSClient, "iq", "type", "result", "id", iq.Attr("id"))
	result.Append(xmlstream.New(nsBind, "bind").Append(xmlstream.New(nsBind, "jid").AppendText(full.String())))
	c.wmu.Lock()
	c.sess = s
	c.wmu.Unlock()
	// The result goes out first through the session's queue, and only once the
	// session is routable: a stanza sent to the new JID right after the client saw
	// the result is not lost. (writing holds the writer back until then.)
	s.mu.Lock()
	c.writing = true
	s.mu.Unlock()
	s.attach(c, xmlstream.AppendElement(nil, result, xmlstream.NSClient), false)
	c.srv.router.Bind(ctx, s)
	s.mu.Lock()
	c.writing = false
	s.kickLocked()
	s.mu.Unlock()
	c.log.Info("session bound", "jid", full.String(), "mechanism", c.mech)
	return nil
}

// established handles a top-level element of a bound stream.
func (c *conn) established(el *xmlstream.Element) error {
	s := c.sess
	switch el.Space {
	case xmlstream.NSClient:
		switch el.Local {
		case "message", "presence", "iq":
			return c.stanza(el)
		}
	case nsSM:
		switch el.Local {
		case "r":
			c.answerR(s)
			return nil
		case "a":
			h, err := strconv.ParseUint(el.Attr("h"), 10, 32)
			if err != nil {
				return serr("bad-format", "invalid h in <a/>")
			}
			s.ack(uint32(h))
			return nil
		case "enable":
			return c.enableSM(el)
		case "resume":
			s.queueRaw(xmlstream.AppendElement(nil, smFailed("unexpected-request"), xmlstream.NSClient))
			return nil
		}
	case nsCSI:
		switch el.Local {
		case "inactive":
			s.mu.Lock()
			s.inactive = true
			s.mu.Unlock()
			return nil
		case "active":
			s.mu.Lock()
			s.inactive = false
			s.flushHeldLocked()
			s.mu.Unlock()
			return nil
		}
	}
	return serr("unsupported-stanza-type", "unexpected <"+el.Local+"/> in "+el.Space)
}

func (c *conn) enableSM(el *xmlstream.Element) error {
	s := c.sess
	s.mu.Lock()
	if s.smEnabled {
		s.mu.Unlock()
		s.queueRaw(xmlstream.AppendElement(nil, smFailed("unexpected-request"), xmlstream.NSClient))
		return nil
	}
	s.smEnabled = true
	r := el.Attr("resume")
	s.smResume = (r == "true" || r == "1") && c.srv.cfg.SMTimeout > 0
	en := xmlstream.New(nsSM, "enabled")
	if s.smResume {
		s.smID = randomID()
		if r := c.srv.repl; r != nil {
			s.smID, s.repl = r.NewID(), r
			s.replPutLocked()
		}
		en.SetAttr("id", s.smID).SetAttr("resume", "true").SetAttr("max", strconv.Itoa(int(c.srv.cfg.SMTimeout/time.Second)))
	}
	s.mu.Unlock()
	if s.smResume {
		c.srv.addResumable(s.smID, s)
	}
	s.queueRaw(xmlstream.AppendElement(nil, en, xmlstream.NSClient))
	return nil
}

// resume takes over a detached (or half-dead) session with XEP-0198 resumption.
func (c *conn) resume(el *xmlstream.Element) error {
	prev := el.Attr("previd")
	h, err := strconv.ParseUint(el.Attr("h"), 10, 32)
	if err != nil {
		return c.writeElem(smFailed("bad-request"))
	}
	s := c.srv.takeResumable(prev)
	if s == nil && c.srv.repl != nil {
		// Held by another node, or replicated from one that is gone.
		st, err := c.srv.repl.Fetch(c.ctx, prev, c.user)
		if err == nil && st.JID.Local == c.user {
			if !c.srv.covers(st, uint32(h)) {
				return c.writeElem(smFailed("item-not-found"))
			}
			c.adopt(st, uint32(h))
			return nil
		}
		if err != nil && !errors.Is(err, ErrNoSession) {
			c.log.Warn("stream management: cannot take the session over from another node", "previd", prev, "err", err)
		}
		return c.writeElem(smFailed("item-not-found"))
	}
	if s == nil || s.jid.Local != c.user {
		return c.writeElem(smFailed("item-not-found"))
	}
	s.mu.Lock()
	if s.terminated || s.moving {
		s.mu.Unlock()
		return c.writeElem(smFailed("item-not-found"))
	}
	old := s.c
	s.ackLocked(uint32(h))
	hIn := s.hIn
	s.c = nil // the old connection's reader must not end the session
	s.mu.Unlock()
	if old != nil {
		old.closeRaw()
	}
	c.wmu.Lock()
	c.sess = s
	c.wmu.Unlock()
	resumed := xmlstream.New(nsSM, "resumed", "previd", prev, "h", strconv.FormatUint(uint64(hIn), 10))
	s.attach(c, xmlstream.AppendElement(nil, resumed, xmlstream.NSClient), true)
	s.publishDetached()
	c.log.Info("session resumed", "jid", s.jid.String())
	return nil
}

// stanza processes a message, presence or IQ from a bound client.
func (c *conn) stanza(el *xmlstream.Element) error {
	s := c.sess
	s.mu.Lock()
	if s.smEnabled {
		s.hIn++
	}
	s.mu.Unlock()
	if f := el.Attr("from"); f != "" {
		fj, err := jid.Parse(f)
		if err != nil || (fj != s.jid && fj != s.jid.Bare()) {
			return serr("invalid-from", "from does not match the bound JID")
		}
	}
	el.SetAttr("from", s.jidString())
	ctx := c.ctx
	if el.Local == "iq" {
		t := el.Attr("type")
		if el.Attr("id") == "" || (t != "get" && t != "set" && t != "result" && t != "error") {
			if t != "error" && t != "result" {
				s.Send(iqError(el, module.ErrModify, "bad-request", "an IQ needs an id and a valid type"))
			}
			return nil
		}
		to := el.Attr("to")
		if t == "set" && el.Child(nsSession, "session") != nil && (to == "" || to == c.vhost.Domain) {
			s.Send(module.Result(el))
			return nil
		}
	}
	var to jid.JID
	toOK := true
	ts := el.Attr("to")
	if ts != "" {
		var err error
		to, err = jid.Parse(ts)
		toOK = err == nil
	}
	if c.srv.router.Run(ctx, module.EvC2SIn, &module.EventData{Stanza: el, From: s.jid, To: to, Session: s}) {
		return nil
	}
	if el.Local == "presence" && el.Attr("to") == "" {
		switch el.Attr("type") {
		case "":
			s.SetPresence(el)
		case "unavailable":
			s.SetPresence(nil)
		}
		return nil
	}
	if !toOK || el.Attr("to") != ts || el.Attr("from") != s.jidString() {
		c.srv.router.Route(ctx, el) // malformed to (jid-malformed), or a hook readdressed it
		return nil
	}
	c.srv.router.RouteParsed(ctx, el, s.jid, to)
	return nil
}

// condOf returns the defined condition of a stream error element.
func condOf(e *xmlstream.Element) string {
	for _, k := range e.Children() {
		if k.Space == nsStreams && k.Local != "text" {
			return k.Local
		}
	}
	return ""
}

// connLog logs with the connection's remote address. (slog.Logger.With would keep
// a cloned handler with the preformatted attribute per connection: a few hundred
// bytes on every idle stream.)
type connLog struct {
	l      *slog.Logger
	remote string
}

func (l connLog) log(level slog.Level, msg string, args []any) {
	if !l.l.Enabled(context.Background(), level) {
		return
	}
	l.l.Log(context.Background(), level, msg, append(args, "remote", l.remote)...)
}

func (l connLog) Debug(msg string, args ...any) { l.log(slog.LevelDebug, msg, args) }
func (l connLog) Info(msg string, args ...any)  { l.log(slog.LevelInfo, msg, args) }
func (l connLog) Warn(msg string, args ...any)  { l.log(slog.LevelWarn, msg, args) }
func (l connLog) Error(msg string, args ...any) { l.log(slog.LevelError, msg, args) }

// safely runs fn, logging instead of crashing the process if it panics (used for
// cleanup that runs hooks from timer goroutines).
func safely(log *slog.Logger, fn func()) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic in session cleanup", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	fn()
}
