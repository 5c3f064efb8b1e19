package c2s

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"xedge/storage"
	"xedge/xmppd/accounts"
	"xedge/xmppd/caps"
	"xedge/xmppd/internal/scram"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Authenticator is the domain's authentication backend (package auth: internal,
// external, sql or ldap) once SetAuthenticator installed it; without one the
// accounts table answers, as before. It logs its own outages (once each), so
// c2s only answers <temporary-auth-failure/> for them.
type Authenticator interface {
	module.Accounts
	// Method is the auth method's name (internal, external, sql, ldap).
	Method() string
	// CheckPassword verifies a password (PLAIN); an error means the backend
	// could not answer.
	CheckPassword(ctx context.Context, user, password string) (bool, error)
	// SCRAM returns the stored-key lookup of a SCRAM mechanism, nil if the
	// backend keeps no such keys; SCRAMMechanisms lists those it keeps.
	SCRAM(mech string) scram.Lookup
	SCRAMMechanisms() []string
	// CanRegister reports whether accounts can be created, changed and removed.
	CanRegister() bool
}

// SetAuthenticator installs the authentication backend of the default host
// (before Start); SetHosts gives other hosts theirs.
func (s *Server) SetAuthenticator(a Authenticator) { s.authn = a }

// SetChannelBinding offers SCRAM-SHA-*-PLUS with tls-exporter channel binding
// (RFC 9266) on TLS streams, announced with XEP-0440 (before Start). Off by
// default: slixmpp 1.8 and other tls-unique-only clients pick -PLUS when
// offered, fail, and then fall back with the "y" flag that a server offering
// -PLUS must refuse (RFC 5802 §6).
func (s *Server) SetChannelBinding(on bool) {
	s.cbOn = on
	if on {
		s.router.StreamFeature(func(st module.StreamState) *xmlstream.Element {
			if !st.Secure || st.Authenticated {
				return nil
			}
			return xmlstream.New(nsSASLCB, "sasl-channel-binding").
				Append(xmlstream.New(nsSASLCB, "channel-binding", "type", scram.TLSExporter))
		})
	}
}

// nsSASLCB is XEP-0440's namespace (SASL channel-binding type capability).
const nsSASLCB = "urn:xmpp:sasl-cb:0"

// channelBinding returns the stream's tls-exporter value (RFC 9266), nil when
// channel binding is off or the connection has no exporter.
func (c *conn) channelBinding() []byte {
	if !c.srv.cbOn || !c.secure {
		return nil
	}
	c.wmu.Lock()
	tc, ok := c.nc.(*tls.Conn)
	c.wmu.Unlock()
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	b, err := st.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
	if err != nil {
		return nil // TLS 1.2 without extended master secret
	}
	return b
}

// mechanisms lists the SASL mechanisms offered on c's stream: the SCRAM ones
// the backend keeps keys for (with their -PLUS forms when channel binding is
// on), and PLAIN under TLS (the only one backends that only check passwords
// can serve).
func (c *conn) mechanisms() []string {
	ms := []string{scram.SHA256, scram.SHA1}
	if a := c.hostOf().authn(); a != nil {
		ms = a.SCRAMMechanisms()
	}
	if len(ms) > 0 && c.channelBinding() != nil {
		plus := make([]string, 0, 2*len(ms)+1)
		for _, m := range ms {
			plus = append(plus, m+"-PLUS")
		}
		ms = append(plus, ms...)
	}
	if c.secure {
		ms = append(ms[:len(ms):len(ms)], "PLAIN")
	}
	return ms
}

// throttleDelay is how long a refused (throttled) authentication waits before the
// <temporary-auth-failure/> answer, to slow down guessing.
const throttleDelay = time.Second

// sasl runs one SASL exchange (RFC 6120 §6) started by <auth/>.
func (c *conn) sasl(auth *xmlstream.Element) error {
	if c.srv.throttle.Blocked(c.ip) {
		time.Sleep(throttleDelay)
		return c.saslFailure("temporary-auth-failure", "too many failed attempts; try again later")
	}
	mech := auth.Attr("mechanism")
	data, err := decodeSASL(auth.Text())
	if err != nil {
		return c.saslFailure("incorrect-encoding", "")
	}
	var user string
	var failCond string
	switch mech {
	case "PLAIN":
		if !c.secure {
			return c.saslFailure("encryption-required", "PLAIN only under TLS")
		}
		if data == nil {
			if err := c.writeElem(xmlstream.New(nsSASL, "challenge")); err != nil {
				return err
			}
			if data, failCond, err = c.saslResponse(); err != nil || failCond != "" {
				return c.saslEnd(err, failCond, "")
			}
		}
		user, failCond = c.plain(data)
		if failCond != "" {
			return c.saslEnd(nil, failCond, user)
		}
		return c.saslSuccess(user, mech, nil)
	case scram.SHA1, scram.SHA256, scram.SHA1Plus, scram.SHA256Plus:
		base := strings.TrimSuffix(mech, "-PLUS")
		h := c.hostOf()
		lookup := h.Accounts.Lookup(base)
		if a := h.authn(); a != nil {
			if lookup = a.SCRAM(base); lookup == nil {
				return c.saslFailure("invalid-mechanism", "")
			}
		}
		cb := scram.Binding{Data: c.channelBinding()}
		cb.Offered = cb.Data != nil
		if base != mech && cb.Data == nil {
			return c.saslFailure("invalid-mechanism", "")
		}
		srv, err := scram.NewServerBinding(mech, lookup, cb)
		if err != nil {
			return err
		}
		for {
			out, done, err := srv.Step(data)
			if err != nil {
				cond := "not-authorized"
				switch {
				case errors.Is(err, scram.ErrMalformed):
					cond = "malformed-request"
				case !errors.Is(err, scram.ErrNotAuthorized):
					c.backendFailed(err)
					cond = "temporary-auth-failure"
				case h.authn() == nil && c.lacksKeys(base, srv.AttemptedUser()):
					// An account imported with another hash's keys only (ejabberd
					// and Prosody export SCRAM-SHA-1): the client falls back to a
					// mechanism the account has keys for. Not a guess: counting it
					// would throttle migrated users behind one address.
					c.log.Debug("SCRAM mechanism without keys for this account", "user", srv.AttemptedUser(), "mechanism", mech)
					return c.saslFailure("not-authorized", "")
				}
				return c.saslEnd(nil, cond, srv.AttemptedUser())
			}
			if done {
				if z := srv.AuthzID(); z != "" && !c.ownJID(srv.Username(), z) {
					return c.saslEnd(nil, "invalid-authzid", srv.Username())
				}
				return c.saslSuccess(srv.Username(), mech, out)
			}
			ch := xmlstream.New(nsSASL, "challenge").AppendText(base64.StdEncoding.EncodeToString(out))
			if err := c.writeElem(ch); err != nil {
				return err
			}
			if data, failCond, err = c.saslResponse(); err != nil || failCond != "" {
				return c.saslEnd(err, failCond, srv.AttemptedUser())
			}
		}
	}
	return c.saslFailure("invalid-mechanism", "")
}

// lacksKeys reports whether user is an account of the accounts table that has
// no keys for the SCRAM hash of mech (imported with another hash's keys only).
func (c *conn) lacksKeys(mech, user string) bool {
	acc := c.hostOf().Accounts
	u, err := acc.Normalize(user)
	if err != nil {
		return false
	}
	r, ok, err := acc.Get(u)
	return err == nil && ok && len(r.Keys(mech).StoredKey) == 0
}

// saslResponse reads the client's next <response/> (or <abort/>).
func (c *conn) saslResponse() ([]byte, string, error) {
	// The exchange's state lives on this goroutine's stack: a slow client is
	// waited for here, not handed to the poller (whose wake-up starts over at the
	// top-level dispatch and would take the <response/> for a stray element).
	c.exchange = true
	el, err := c.next(false)
	c.exchange = false
	if err != nil {
		return nil, "", err
	}
	switch {
	case el.Space == nsSASL && el.Local == "abort":
		return nil, "aborted", nil
	case el.Space == nsSASL && el.Local == "response":
		b, err := decodeSASL(el.Text())
		if err != nil {
			return nil, "incorrect-encoding", nil
		}
		return b, "", nil
	}
	return nil, "", serr("not-authorized", "expected a SASL response")
}

// saslEnd answers a failed exchange; not-authorized failures count for throttling.
func (c *conn) saslEnd(err error, cond, user string) error {
	if err != nil {
		return err
	}
	if cond == "not-authorized" || cond == "malformed-request" {
		c.srv.throttle.Fail(c.ip)
		c.log.Info("authentication failed", "user", user, "condition", cond)
	}
	return c.saslFailure(cond, "")
}

// plain checks a PLAIN message (authzid NUL authcid NUL password).
func (c *conn) plain(data []byte) (user, failCond string) {
	parts := bytes.Split(data, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 {
		return "", "malformed-request"
	}
	authz, authc, pw := string(parts[0]), string(parts[1]), string(parts[2])
	var u string
	var ok bool
	var err error
	h := c.hostOf()
	if a := h.authn(); a != nil {
		if u, err = h.Accounts.Normalize(authc); err != nil {
			return authc, "not-authorized"
		}
		ok, err = a.CheckPassword(c.ctx, u, pw)
	} else {
		u, ok, err = h.Accounts.CheckPassword(authc, pw)
	}
	if err != nil {
		c.backendFailed(err)
		return authc, "temporary-auth-failure"
	}
	if !ok {
		return authc, "not-authorized"
	}
	if authz != "" && !c.ownJID(u, authz) {
		return authc, "invalid-authzid"
	}
	return u, ""
}

// backendFailed logs a backend that could not answer: an installed
// Authenticator logged the outage once already, so here it is debug detail.
func (c *conn) backendFailed(err error) {
	if c.hostOf().authn() != nil {
		c.log.Debug("authentication backend failed", "err", err)
		return
	}
	c.log.Warn("authentication backend failed", "err", err)
}

// ownJID reports whether authzid names user's own account (bare JID or localpart):
// xmppd has no proxy authorization.
func (c *conn) ownJID(user, authzid string) bool {
	h := c.hostOf()
	u, err := h.Accounts.Normalize(user)
	if err != nil {
		return false
	}
	if j, err := jid.Parse(authzid); err == nil && j.Resource == "" {
		if j.Local == "" { // a bare localpart parses as a domain
			return j.Domain == u
		}
		return j.Local == u && j.Domain == h.Domain
	}
	return false
}

func (c *conn) saslSuccess(user, mech string, out []byte) error {
	u, err := c.hostOf().Accounts.Normalize(user)
	if err != nil {
		return c.saslFailure("not-authorized", "")
	}
	c.srv.throttle.Success(c.ip)
	succ := xmlstream.New(nsSASL, "success")
	if len(out) > 0 {
		succ.AppendText(base64.StdEncoding.EncodeToString(out))
	}
	if err := c.writeElem(succ); err != nil {
		return err
	}
	c.authed, c.user, c.mech = true, u, mech
	c.log.Info("authenticated", "user", u, "mechanism", mech)
	c.rd.reset()
	c.dec.Reset(&c.rd)
	return c.openStream()
}

// register handles XEP-0077 in-band registration before authentication.
func (c *conn) register(iq *xmlstream.Element) error {
	q := iq.Child(nsReg, "query")
	switch iq.Attr("type") {
	case "get":
		r := xmlstream.New(nsReg, "query")
		r.Append(xmlstream.New(nsReg, "instructions").AppendText("Choose a username and password for use with this service."))
		r.Append(xmlstream.New(nsReg, "username"), xmlstream.New(nsReg, "password"))
		return c.writeElem(module.Result(iq, r))
	case "set":
		if q.Child(nsReg, "remove") != nil {
			return c.writeElem(iqError(iq, module.ErrAuth, "not-authorized", "authenticate to remove an account"))
		}
		if c.srv.throttle.Blocked(c.ip) || (c.srv.regLimit != nil && c.srv.regLimit.Blocked(c.ip)) {
			return c.writeElem(iqError(iq, module.ErrWait, "resource-constraint", "too many attempts; try again later"))
		}
		user := strings.TrimSpace(q.ChildText(nsReg, "username"))
		pw := q.ChildText(nsReg, "password")
		if user == "" || pw == "" {
			return c.writeElem(iqError(iq, module.ErrModify, "not-acceptable", "username and password are required"))
		}
		h := c.hostOf()
		if a := h.authn(); a != nil && !a.CanRegister() {
			return c.writeElem(iqError(iq, module.ErrCancel, "not-allowed", "accounts are kept in the "+a.Method()+" directory"))
		}
		err := h.users().Create(c.ctx, user, pw)
		switch {
		case err == nil:
			if c.srv.regLimit != nil {
				c.srv.regLimit.Fail(c.ip) // counts registrations, not failures
			}
			c.log.Info("account registered in-band", "user", user, "host", h.Domain)
			return c.writeElem(module.Result(iq))
		case errors.Is(err, storage.ErrConflict):
			return c.writeElem(iqError(iq, module.ErrCancel, "conflict", "the username is taken"))
		case errors.Is(err, accounts.ErrInvalidUser):
			return c.writeElem(iqError(iq, module.ErrModify, "not-acceptable", "invalid username"))
		default:
			c.log.Warn("in-band registration failed", "user", user, "err", err)
			return c.writeElem(module.StoreError(iq, err))
		}
	}
	return c.writeElem(iqError(iq, module.ErrModify, "bad-request", ""))
}

// SetDiscoForms sets where the extended information forms (XEP-0128) of the
// server's disco#info come from (before Start): the caps ver hashes them after the
// identity and the features (XEP-0115 §5.1), so it matches what a client computes
// from the disco#info answer. f must return forms the caller may not change later.
func (s *Server) SetDiscoForms(f func() []*xmlstream.Element) {
	s.capsMu.Lock()
	s.capsForms = f
	s.capsV = ""
	s.capsMu.Unlock()
}

// capsVer returns the XEP-0115 verification string of the server's identity, the
// disco features modules registered and the extended forms, computed again only when
// a feature was added or the forms changed.
func (s *Server) capsVer() string {
	n := s.router.DiscoCount()
	forms := s.capsFormsPart()
	s.capsMu.Lock()
	if s.capsV != "" && s.capsN == n && s.capsF == forms {
		v := s.capsV
		s.capsMu.Unlock()
		return v
	}
	s.capsMu.Unlock()
	v := s.computeCapsVer()
	s.capsMu.Lock()
	s.capsN, s.capsF, s.capsV = n, forms, v
	s.capsMu.Unlock()
	return v
}

// computeCapsVer hashes the identity, the disco features and the extended forms
// (XEP-0115 §5.1).
func (s *Server) computeCapsVer() string {
	id := s.cfg.IdentityCategory + "/" + s.cfg.IdentityType + "//" + s.cfg.IdentityName
	return caps.Hash(caps.String([]string{id}, s.router.DiscoFeatures()) + s.capsFormsPart())
}

// capsFormsPart is the part of the §5.1 string the extended forms make.
func (s *Server) capsFormsPart() string {
	s.capsMu.Lock()
	f := s.capsForms
	s.capsMu.Unlock()
	if f == nil {
		return ""
	}
	return caps.Forms(f())
}

// CapsNode is the caps node the server advertises.
const CapsNode = "https://xedge.invalid/xmppd"

func (s *Server) capsElement() *xmlstream.Element {
	return xmlstream.New(nsCaps, "c", "hash", "sha-1", "node", CapsNode, "ver", s.capsVer())
}

// handleRegisterIQ is XEP-0077 after authentication: password change and account
// removal for the sender's own account.
func (s *Server) handleRegisterIQ(ctx context.Context, h module.Host, iq *module.IQ) {
	st := iq.Stanza
	hs := s.host(iq.From.Domain)
	if hs == nil || iq.From.Local == "" || (iq.To.Local != "" && (iq.To.Local != iq.From.Local || iq.To.Domain != iq.From.Domain)) {
		h.Route(ctx, module.Error(st, module.ErrCancel, "not-allowed", ""))
		return
	}
	user := iq.From.Local
	if a := hs.authn(); a != nil && !a.CanRegister() && st.Attr("type") == "set" {
		h.Route(ctx, module.Error(st, module.ErrCancel, "not-allowed", "accounts are kept in the "+a.Method()+" directory"))
		return
	}
	q := st.Child(nsReg, "query")
	if q == nil {
		h.Route(ctx, module.Error(st, module.ErrModify, "bad-request", "expected <query xmlns='jabber:iq:register'/>"))
		return
	}
	if st.Attr("type") == "get" {
		r := xmlstream.New(nsReg, "query")
		r.Append(xmlstream.New(nsReg, "registered"), xmlstream.New(nsReg, "username").AppendText(user), xmlstream.New(nsReg, "password"))
		h.Route(ctx, module.Result(st, r))
		return
	}
	if q.Child(nsReg, "remove") != nil {
		if err := hs.users().Delete(ctx, user); err != nil {
			s.log.Warn("account removal failed", "user", user, "err", err)
			h.Route(ctx, module.StoreError(st, err))
			return
		}
		s.log.Info("account removed in-band", "user", user)
		// The account is gone, so the router would no longer deliver to it: answer
		// the session directly, then close every session of the account.
		if iq.Session != nil {
			iq.Session.Send(module.Result(st))
		}
		for _, sess := range h.Sessions(iq.From.Bare()) {
			sess.Close("not-authorized", "account removed")
		}
		return
	}
	u, pw := strings.TrimSpace(q.ChildText(nsReg, "username")), q.ChildText(nsReg, "password")
	if pw == "" {
		h.Route(ctx, module.Error(st, module.ErrModify, "bad-request", "password required"))
		return
	}
	if u != "" {
		if n, err := hs.Accounts.Normalize(u); err != nil || n != user {
			h.Route(ctx, module.Error(st, module.ErrModify, "bad-request", "you can only change your own password"))
			return
		}
	}
	if err := hs.users().SetPassword(ctx, user, pw); err != nil {
		s.log.Warn("password change failed", "user", user, "err", err)
		h.Route(ctx, module.StoreError(st, err))
		return
	}
	s.log.Info("password changed in-band", "user", user)
	h.Route(ctx, module.Result(st))
}
