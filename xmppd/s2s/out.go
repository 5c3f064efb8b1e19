package s2s

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// outLink is the outgoing link to one remote domain: made on the first stanza,
// queued to while it is made, closed when idle or when the peer ends it.
type outLink struct {
	s      *Server
	local  string // our originating domain (a virtual host)
	domain string
	q      chan *xmlstream.Element
	done   chan struct{}

	mu       sync.Mutex
	up       bool
	st       *stream
	auth     string // "sasl-external" or "dialback"
	verified bool
	remote   string
	borrowed bool // the stream is an incoming bidi stream (its reader is the inStream)
	bidi     bool // our stream is bidirectional: the reader routes the peer's stanzas

	closeOnce sync.Once
}

func newOutLink(s *Server, local, domain string) *outLink {
	return &outLink{s: s, local: local, domain: domain, q: make(chan *xmlstream.Element, s.cfg.QueueMax), done: make(chan struct{})}
}

// enqueue adds st without blocking (called under s.mu).
func (l *outLink) enqueue(st *xmlstream.Element) bool {
	select {
	case l.q <- st:
		return true
	default:
		return false
	}
}

// key is l's name in the link table (LinkKey).
func (l *outLink) key() string { return LinkKey(l.s.cfg.Domain, l.local, l.domain) }

func (l *outLink) status() LinkStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := LinkStatus{Domain: l.domain, Direction: "out", State: "connecting", Queued: len(l.q), Auth: l.auth,
		Verified: l.verified, Remote: l.remote}
	if l.local != l.s.cfg.Domain {
		ls.From = l.local
	}
	if l.up {
		ls.State = "up"
		ls.TLS = l.st.tls
	}
	return ls
}

// shutdown ends the link (Stop): the stream is closed with cond, queued stanzas
// are bounced by run.
func (l *outLink) shutdown(cond string) {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		st := l.st
		l.mu.Unlock()
		if st != nil {
			st.streamError(cond, "")
			st.nc.Close()
		}
		close(l.done)
	})
}

// run makes the link, then writes queued stanzas until the link ends.
func (l *outLink) run() {
	s := l.s
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
	st, auth, err := s.connectOut(ctx, l.domain, l.local, false)
	timedOut := ctx.Err() == context.DeadlineExceeded
	cancel()
	if err != nil {
		cond := "remote-server-not-found"
		if timedOut || isTimeout(err) {
			cond = "remote-server-timeout"
		}
		s.log.Warn("s2s link failed", "domain", l.domain, "cond", cond, "err", err)
		s.removeOut(l)
		l.bounceQueued(cond, "")
		return
	}
	l.mu.Lock()
	l.st, l.up, l.auth = st, true, auth
	l.verified = s.verifyCert(st.peerCerts, l.domain) == nil
	l.remote = st.nc.RemoteAddr().String()
	l.bidi = st.bidi
	l.mu.Unlock()
	select {
	case <-l.done: // Stop came while connecting
		st.streamError("system-shutdown", "")
		st.nc.Close()
		s.removeOut(l)
		l.bounceQueued("remote-server-not-found", "shutting down")
		return
	default:
	}
	s.log.Info("s2s link up", "domain", l.domain, "remote", l.remote, "auth", auth, "verified", l.verified)
	s.wg.Add(1)
	go l.reader()
	l.writer()
}

// bounceQueued bounces every stanza still queued (after the link left the table).
func (l *outLink) bounceQueued(cond, text string) {
	for {
		select {
		case st := <-l.q:
			typ := module.ErrCancel
			if cond == "remote-server-timeout" {
				typ = module.ErrWait // RFC 6120 §8.3.3.17: may be retried later
			}
			l.s.bounce(l.s.ctx, st, typ, cond, text)
		default:
			return
		}
	}
}

func (l *outLink) end() {
	l.closeOnce.Do(func() {
		if !l.borrowed {
			l.st.nc.Close()
		}
		close(l.done)
	})
}

func (l *outLink) writer() {
	s := l.s
	idle := time.NewTimer(s.cfg.IdleTimeout)
	defer idle.Stop()
	var buf []byte
	var batch []*xmlstream.Element
	for {
		select {
		case <-l.done:
			s.removeOut(l)
			l.bounceQueued("remote-server-timeout", "link to "+l.domain+" closed")
			return
		case <-idle.C:
			s.mu.Lock()
			if len(l.q) == 0 && s.out[l.key()] == l {
				s.removeOutLocked(l)
				s.mu.Unlock()
				s.log.Info("s2s link idle, closing", "domain", l.domain)
				if !l.borrowed {
					l.st.write([]byte(xmlstream.StreamClose))
				}
				l.end()
				return
			}
			s.mu.Unlock()
			idle.Reset(s.cfg.IdleTimeout)
		case st := <-l.q:
			buf = buf[:0]
			batch = batch[:0]
			for {
				batch = append(batch, st)
				respace(st, xmlstream.NSClient, NSServer)
				buf = xmlstream.AppendElement(buf, st, NSServer)
				if len(buf) > 32<<10 {
					break
				}
				select {
				case st = <-l.q:
					continue
				default:
				}
				break
			}
			if err := l.st.write(buf); err != nil {
				s.log.Warn("s2s link write failed", "domain", l.domain, "err", err)
				l.end()
				for _, st := range batch { // not known to have arrived
					respace(st, NSServer, xmlstream.NSClient)
					s.bounce(s.ctx, st, module.ErrWait, "remote-server-timeout", "link to "+l.domain+" failed")
				}
				continue
			}
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(s.cfg.IdleTimeout)
		}
	}
}

// reader consumes what the peer sends on our outgoing stream (keepalives, a
// stream error, the stream's end) until it ends.
func (l *outLink) reader() {
	defer l.s.wg.Done()
	defer l.end()
	l.st.nc.SetReadDeadline(time.Time{})
	for {
		el, err := l.st.dec.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				l.s.log.Info("s2s link ended", "domain", l.domain, "err", err)
			} else {
				l.s.log.Info("s2s link closed by peer", "domain", l.domain)
			}
			return
		}
		if el.Space == xmlstream.NSStream && el.Local == "error" {
			l.s.log.Warn("s2s link: stream error from peer", "domain", l.domain, "error", el.String())
			return
		}
		switch el.Local {
		case "message", "presence", "iq":
			if !l.bidi {
				l.st.streamError("unsupported-stanza-type", "not a bidirectional stream")
				return
			}
			if cond, text := l.s.inbound(el, func(d string) bool { return d == l.domain }); cond != "" {
				l.s.log.Warn("s2s link: bad stanza from peer", "domain", l.domain, "cond", cond, "text", text)
				l.st.streamError(cond, text)
				return
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connectOut resolves domain, connects to its targets in order and negotiates a
// stream from our domain from: TLS, then SASL EXTERNAL or dialback (auth), or, for
// a dialback verification (verify), TLS only. It returns the ready stream and the
// authentication used.
func (s *Server) connectOut(ctx context.Context, domain, from string, verify bool) (*stream, string, error) {
	targets, err := s.resolve(ctx, domain)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", domain, err)
	}
	var errs []error
	for _, t := range targets {
		addrs, err := s.lookupAddrs(ctx, t.Host)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range addrs {
			addr := net.JoinHostPort(a, strconv.Itoa(t.Port))
			nc, err := s.cfg.Dial(ctx, "tcp", addr)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", t, err))
				if ctx.Err() != nil {
					return nil, "", errors.Join(errs...)
				}
				continue
			}
			st, auth, err := s.negotiateOut(ctx, nc, domain, from, t.DirectTLS, verify, false)
			if errors.Is(err, errExternalRefused) {
				// Servers such as ejabberd take no dialback on a stream whose SASL
				// failed: a new connection goes straight to dialback.
				nc.Close()
				if nc, err = s.cfg.Dial(ctx, "tcp", addr); err == nil {
					st, auth, err = s.negotiateOut(ctx, nc, domain, from, t.DirectTLS, verify, true)
				}
			}
			if err == nil {
				return st, auth, nil
			}
			if nc != nil {
				nc.Close()
			}
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			if ctx.Err() != nil {
				return nil, "", errors.Join(errs...)
			}
		}
	}
	if len(errs) == 0 {
		return nil, "", fmt.Errorf("%s: no address", domain)
	}
	return nil, "", errors.Join(errs...)
}

// negotiateOut runs the initiating side of the stream on nc until it can carry
// stanzas (or, with verify, db:verify requests).
// errExternalRefused is a peer refusing our SASL EXTERNAL.
var errExternalRefused = errors.New("SASL EXTERNAL refused")

func (s *Server) negotiateOut(ctx context.Context, nc net.Conn, domain, from string, direct, verify, noExternal bool) (*stream, string, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c := newStream(s, nc)
	c.local = from
	if direct {
		if err := c.startTLSClient(ctx, domain, true); err != nil {
			return nil, "", err
		}
	}
	sasl := false
	for range 4 {
		if err := c.writeHeader(from, domain, ""); err != nil {
			return nil, "", err
		}
		hdr, err := c.dec.StreamHeader()
		if err != nil {
			return nil, "", fmt.Errorf("stream header: %w", err)
		}
		if hdr.Space != xmlstream.NSStream || hdr.Local != "stream" || c.dec.DefaultNS() != NSServer {
			return nil, "", fmt.Errorf("not a jabber:server stream")
		}
		id := hdr.Attr("id")
		var feats *xmlstream.Element
		if hdr.Attr("version") == "1.0" {
			el, err := c.next()
			if err != nil {
				return nil, "", err
			}
			if el.Space != xmlstream.NSStream || el.Local != "features" {
				return nil, "", fmt.Errorf("expected stream features, got %s", el.String())
			}
			feats = el
		}
		if !c.tls {
			if feats != nil && feats.Child(NSTLS, "starttls") != nil {
				if err := c.write([]byte("<starttls xmlns='" + NSTLS + "'/>")); err != nil {
					return nil, "", err
				}
				el, err := c.next()
				if err != nil {
					return nil, "", err
				}
				if el.Local != "proceed" || el.Space != NSTLS {
					return nil, "", fmt.Errorf("STARTTLS refused: %s", el.String())
				}
				if err := c.startTLSClient(ctx, domain, false); err != nil {
					return nil, "", err
				}
				continue
			}
			if !s.cfg.AllowPlaintext {
				return nil, "", errors.New("the peer offers no STARTTLS (s2s-allow-plaintext is off)")
			}
		}
		if verify {
			return c, "", nil
		}
		if sasl {
			return c, "sasl-external", nil
		}
		verr := s.verifyCert(c.peerCerts, domain)
		if s.cfg.SecureAuth && verr != nil {
			return nil, "", fmt.Errorf("certificate does not verify for %s (s2s-secure-auth): %w", domain, verr)
		}
		if c.tls && !s.cfg.NoBidi && !c.bidi && feats != nil && feats.Child(NSBidiFeature, "bidi") != nil {
			// XEP-0288: ask for a bidirectional stream before authenticating.
			if err := c.write([]byte("<bidi xmlns='" + NSBidi + "'/>")); err != nil {
				return nil, "", err
			}
			c.bidi = true
		}
		if c.tls && !noExternal && hasMechanism(feats, "EXTERNAL") {
			auth := xmlstream.New(NSSASL, "auth", "mechanism", "EXTERNAL").AppendText(base64.StdEncoding.EncodeToString([]byte(from)))
			if err := c.writeEl(auth); err != nil {
				return nil, "", err
			}
			el, err := c.next()
			if err != nil {
				return nil, "", err
			}
			if el.Space == NSSASL && el.Local == "success" {
				sasl = true
				c.reset()
				continue
			}
			if s.cfg.SecureAuth {
				return nil, "", fmt.Errorf("SASL EXTERNAL refused: %s", el.String())
			}
			s.log.Info("s2s: SASL EXTERNAL refused, trying dialback on a new connection", "domain", domain, "answer", el.String())
			c.write([]byte(xmlstream.StreamClose))
			return nil, "", errExternalRefused
		}
		if s.cfg.SecureAuth {
			return nil, "", errors.New("the peer offers no SASL EXTERNAL (s2s-secure-auth)")
		}
		if id == "" {
			return nil, "", errors.New("the peer's stream has no id (dialback needs one)")
		}
		if err := c.writeDB("result", DialbackKey(s.cfg.DialbackSecret, domain, from, id), false, "from", from, "to", domain); err != nil {
			return nil, "", err
		}
		for range 16 {
			el, err := c.next()
			if err != nil {
				return nil, "", err
			}
			if el.Space != NSDialback || el.Local != "result" {
				continue
			}
			switch el.Attr("type") {
			case "valid":
				return c, "dialback", nil
			default:
				return nil, "", fmt.Errorf("dialback refused: %s", el.String())
			}
		}
		return nil, "", errors.New("no dialback result")
	}
	return nil, "", errors.New("too many stream restarts")
}

// next reads the next element, turning a stream error into an error.
func (c *stream) next() (*xmlstream.Element, error) {
	el, err := c.dec.Next()
	if err != nil {
		return nil, err
	}
	if el.Space == xmlstream.NSStream && el.Local == "error" {
		return nil, fmt.Errorf("stream error from peer: %s", el.String())
	}
	return el, nil
}

// verifyDialback asks the authoritative server of originating whether key is
// the key it gave for a stream from originating to receiving with id (XEP-0220
// §2.1.2, db:verify on a connection of its own).
func (s *Server) verifyDialback(ctx context.Context, originating, receiving, id, key string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	c, _, err := s.connectOut(ctx, originating, receiving, true)
	if err != nil {
		return false, err
	}
	defer c.nc.Close()
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.writeDB("verify", key, false, "from", receiving, "to", originating, "id", id); err != nil {
		return false, err
	}
	for range 16 {
		el, err := c.next()
		if err != nil {
			return false, err
		}
		if el.Space == NSDialback && el.Local == "verify" && el.Attr("id") == id {
			c.write([]byte(xmlstream.StreamClose))
			return el.Attr("type") == "valid", nil
		}
	}
	return false, errors.New("no dialback verify answer")
}
