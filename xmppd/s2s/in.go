package s2s

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/xmlstream"
)

// inStream is one incoming connection: a peer's stream to us, on which one or
// more of its domains authenticate (SASL EXTERNAL, or dialback per domain) and
// then send stanzas.
type inStream struct {
	s      *Server
	c      *stream
	remote string

	mu     sync.Mutex
	from   string            // the stream header's from
	me     string            // the stream header's to (our domain; the default one if absent)
	authed map[string]string // authenticated peer domain -> method
	bidi   bool              // the peer asked for a bidirectional stream (XEP-0288)
	links  []*outLink        // our links to peer domains over this stream (bidi)

	closeOnce sync.Once
}

// accept serves a new incoming stream; false once the server stops.
func (s *Server) accept(nc net.Conn) bool {
	in := &inStream{s: s, c: newStream(s, nc), remote: nc.RemoteAddr().String(), authed: map[string]string{}}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		nc.Close()
		return false
	}
	s.in[in] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go in.serve()
	return true
}

func (in *inStream) close(cond, text string) {
	in.closeOnce.Do(func() {
		in.c.streamError(cond, text)
		in.c.nc.Close()
	})
}

func (in *inStream) status() []LinkStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []LinkStatus
	for d, m := range in.authed {
		out = append(out, LinkStatus{Domain: d, Direction: "in", State: "up", Auth: m, TLS: in.c.tls,
			Verified: in.s.verifyCert(in.c.peerCerts, d) == nil, Remote: in.remote})
	}
	return out
}

func (in *inStream) isAuthed(domain string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	_, ok := in.authed[domain]
	return ok
}

func (in *inStream) setAuthed(domain, method string) {
	in.mu.Lock()
	in.authed[domain] = method
	in.mu.Unlock()
	// The negotiation's deadline no longer applies: an authenticated stream may
	// stay quiet until the idle limit (reset by every stanza).
	in.c.nc.SetReadDeadline(time.Now().Add(2 * in.s.cfg.IdleTimeout))
	in.mu.Lock()
	bidi, me := in.bidi, in.me
	in.mu.Unlock()
	if bidi {
		in.s.attachBidi(me, domain, in)
	}
	in.s.log.Info("s2s incoming stream authenticated", "domain", domain, "auth", method, "remote", in.remote)
}

func (in *inStream) serve() {
	s := in.s
	defer s.wg.Done()
	defer func() {
		in.close("", "")
		s.mu.Lock()
		delete(s.in, in)
		links := in.links
		s.mu.Unlock()
		for _, l := range links {
			l.end()
		}
	}()
	in.c.nc.SetReadDeadline(time.Now().Add(s.cfg.ConnectTimeout))
	for restarts := 0; ; restarts++ {
		if restarts > 4 {
			in.close("policy-violation", "too many stream restarts")
			return
		}
		restart, cond, text := in.stream()
		if !restart {
			if cond != "" {
				s.log.Warn("s2s incoming stream closed", "remote", in.remote, "from", in.from, "cond", cond, "text", text)
			}
			in.close(cond, text)
			return
		}
	}
}

// stream serves one XML stream on the connection; restart reports a stream
// restart (after TLS or SASL), else cond is the stream error to close with.
func (in *inStream) stream() (restart bool, cond, text string) {
	s, c := in.s, in.c
	hdr, err := c.dec.StreamHeader()
	id := streamID()
	if err != nil {
		c.writeHeader(s.cfg.Domain, "", id)
		return false, condOf(err, ""), ""
	}
	to := strings.ToLower(hdr.Attr("to"))
	from := strings.ToLower(hdr.Attr("from"))
	me := to
	if me == "" {
		me = s.cfg.Domain
	}
	if err := c.writeHeader(me, from, id); err != nil {
		return false, "", ""
	}
	if hdr.Space != xmlstream.NSStream || hdr.Local != "stream" || c.dec.DefaultNS() != NSServer {
		return false, "invalid-namespace", ""
	}
	if !s.cfg.Local(me) {
		return false, "host-unknown", ""
	}
	in.mu.Lock()
	in.from, in.me = from, me
	sasl := len(in.authed) > 0 && in.authed[from] == "sasl-external"
	in.mu.Unlock()
	// Features.
	feats := xmlstream.New(xmlstream.NSStream, "features")
	external := false
	switch {
	case !c.tls:
		tlsF := xmlstream.New(NSTLS, "starttls")
		if !s.cfg.AllowPlaintext {
			tlsF.Append(xmlstream.New(NSTLS, "required"))
		}
		feats.Append(tlsF)
		if s.cfg.AllowPlaintext {
			feats.Append(xmlstream.New(NSDialbackFt, "dialback").Append(xmlstream.New(NSDialbackFt, "errors")))
		}
	case !sasl:
		if from != "" && s.verifyCert(c.peerCerts, from) == nil {
			external = true
			feats.Append(xmlstream.New(NSSASL, "mechanisms").Append(xmlstream.New(NSSASL, "mechanism").AppendText("EXTERNAL")))
		}
		if !s.cfg.SecureAuth {
			feats.Append(xmlstream.New(NSDialbackFt, "dialback").Append(xmlstream.New(NSDialbackFt, "errors")))
		}
		if !s.cfg.NoBidi {
			feats.Append(xmlstream.New(NSBidiFeature, "bidi"))
		}
	}
	if hdr.Attr("version") == "1.0" {
		if err := c.writeEl(feats); err != nil {
			return false, "", ""
		}
	}
	for {
		el, err := c.dec.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return false, "", ""
			}
			return false, condOf(err, ""), ""
		}
		switch {
		case el.Space == NSTLS && el.Local == "starttls":
			if c.tls {
				return false, "policy-violation", "TLS is already on"
			}
			if err := c.write([]byte("<proceed xmlns='" + NSTLS + "'/>")); err != nil {
				return false, "", ""
			}
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
			err := c.startTLSServer(ctx)
			cancel()
			if err != nil {
				s.log.Info("s2s incoming TLS failed", "remote", in.remote, "from", from, "err", err)
				return false, "", ""
			}
			return true, "", ""
		case el.Space == NSSASL && el.Local == "auth":
			if !external || el.Attr("mechanism") != "EXTERNAL" {
				c.write([]byte("<failure xmlns='" + NSSASL + "'><invalid-mechanism/></failure>"))
				continue
			}
			authz := from
			if t := strings.TrimSpace(el.Text()); t != "" && t != "=" {
				b, err := base64.StdEncoding.DecodeString(t)
				if err != nil {
					c.write([]byte("<failure xmlns='" + NSSASL + "'><incorrect-encoding/></failure>"))
					continue
				}
				authz = strings.ToLower(string(b))
			}
			if authz != from || s.verifyCert(c.peerCerts, authz) != nil {
				s.log.Warn("s2s SASL EXTERNAL refused", "remote", in.remote, "from", from, "authzid", authz)
				c.write([]byte("<failure xmlns='" + NSSASL + "'><not-authorized/></failure>"))
				continue
			}
			if err := c.write([]byte("<success xmlns='" + NSSASL + "'/>")); err != nil {
				return false, "", ""
			}
			in.setAuthed(from, "sasl-external")
			c.reset()
			return true, "", ""
		case el.Space == NSDialback && el.Local == "result" && el.Attr("type") == "":
			if !c.tls && !s.cfg.AllowPlaintext {
				return false, "policy-violation", "STARTTLS first"
			}
			in.dialbackResult(el, id)
		case el.Space == NSBidi && el.Local == "bidi":
			if s.cfg.NoBidi || !c.tls {
				return false, "unsupported-feature", "bidirectional streams are not offered here"
			}
			in.mu.Lock()
			in.bidi = true
			in.mu.Unlock()
		case el.Space == NSDialback && el.Local == "verify" && el.Attr("type") == "":
			in.answerVerify(el)
		case el.Local == "message" || el.Local == "presence" || el.Local == "iq":
			if cond, text := in.stanza(el); cond != "" {
				return false, cond, text
			}
			c.nc.SetReadDeadline(time.Now().Add(2 * s.cfg.IdleTimeout))
		default:
			return false, "unsupported-stanza-type", ""
		}
	}
}

// stanza routes a stanza from an authenticated domain to a local one.
func (in *inStream) stanza(el *xmlstream.Element) (cond, text string) {
	return in.s.inbound(el, in.isAuthed)
}

// inbound checks a stanza a peer sent (from a domain authed accepts, to a local
// domain) and routes it, or returns the stream error to close with.
func (s *Server) inbound(el *xmlstream.Element, authed func(string) bool) (cond, text string) {
	if el.Space != NSServer {
		return "invalid-namespace", ""
	}
	from, ferr := jid.Parse(el.Attr("from"))
	if ferr != nil || el.Attr("from") == "" {
		return "improper-addressing", "missing or invalid from"
	}
	to, terr := jid.Parse(el.Attr("to"))
	if terr != nil || el.Attr("to") == "" {
		return "improper-addressing", "missing or invalid to"
	}
	if !authed(from.Domain) {
		return "not-authorized", from.Domain + " is not authenticated on this stream"
	}
	if !s.cfg.Local(to.Domain) {
		return "host-unknown", to.Domain + " is not served here"
	}
	el.SetAttr("from", from.String())
	el.SetAttr("to", to.String())
	respace(el, NSServer, xmlstream.NSClient)
	s.cfg.Route(s.ctx, el)
	return "", ""
}

// dialbackResult handles <db:result/> from a peer asking to send as its domain:
// the key is checked with the domain's authoritative server, the answer comes
// back asynchronously (XEP-0220 §2.1).
func (in *inStream) dialbackResult(el *xmlstream.Element, id string) {
	s := in.s
	origin := strings.ToLower(el.Attr("from"))
	recv := strings.ToLower(el.Attr("to"))
	key := strings.TrimSpace(el.Text())
	reply := func(typ string, errCond string) {
		inner := ""
		if errCond != "" {
			inner = "<error type='cancel'><" + errCond + " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
		}
		in.c.writeDB("result", inner, true, "from", recv, "to", origin, "type", typ)
	}
	if _, err := jid.Parse(origin); err != nil || origin == "" || strings.Contains(origin, "@") || strings.Contains(origin, "/") {
		reply("error", "improper-addressing")
		return
	}
	if !s.cfg.Local(recv) {
		reply("error", "item-not-found")
		return
	}
	if s.cfg.Local(origin) {
		reply("invalid", "")
		return
	}
	if s.cfg.SecureAuth {
		reply("error", "not-authorized")
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ok, err := s.verifyDialback(s.ctx, origin, recv, id, key)
		switch {
		case err != nil:
			s.log.Warn("s2s dialback: authoritative server unreachable", "domain", origin, "err", err)
			reply("error", "remote-server-not-found")
		case !ok:
			s.log.Warn("s2s dialback: key refused by the authoritative server", "domain", origin, "remote", in.remote)
			reply("invalid", "")
		default:
			in.setAuthed(origin, "dialback")
			reply("valid", "")
		}
	}()
}

// answerVerify answers <db:verify/> as the authoritative server of its to.
func (in *inStream) answerVerify(el *xmlstream.Element) {
	s := in.s
	recv := strings.ToLower(el.Attr("from"))
	origin := strings.ToLower(el.Attr("to"))
	id := el.Attr("id")
	typ := "invalid"
	if s.cfg.Local(origin) && id != "" && subtle.ConstantTimeCompare([]byte(DialbackKey(s.cfg.DialbackSecret, recv, origin, id)), []byte(strings.TrimSpace(el.Text()))) == 1 {
		typ = "valid"
	}
	s.log.Debug("s2s dialback verify answered", "receiving", recv, "originating", origin, "type", typ)
	in.c.writeDB("verify", "", false, "from", origin, "to", recv, "id", id, "type", typ)
}
