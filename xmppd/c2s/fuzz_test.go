package c2s

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/jid"
	"xedge/xmppd/router"
	"xedge/xmppd/xmlstream"
)

// discardConn is a net.Conn that swallows writes and has nothing to read.
type discardConn struct{}

func (discardConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) Close() error                     { return nil }
func (discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 1} }
func (discardConn) SetDeadline(time.Time) error      { return nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzStreamStates feeds arbitrary top-level elements to the stream state machine
// (before authentication, before binding, and established): whatever a client sends,
// the server must answer or end that stream, never panic.
func FuzzStreamStates(f *testing.F) {
	for _, s := range []string{
		"<message to='bob@localhost'><body>hi</body></message>",
		"<iq type='set' id='1'><query xmlns='jabber:iq:register'><username>u</username><password>p</password></query></iq>",
		"<iq type='set' id='1'><query xmlns='jabber:iq:register'><remove/></query></iq>",
		"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>",
		"<enable xmlns='urn:xmpp:sm:3' resume='true'/><r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='7'/>",
		"<resume xmlns='urn:xmpp:sm:3' previd='x' h='1'/>",
		"<inactive xmlns='urn:xmpp:csi:0'/><presence/><active xmlns='urn:xmpp:csi:0'/>",
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj1hbGljZSxyPWFiYw==</auth><response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AAAA</response>",
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
		"<presence type='unavailable'/><iq type='get' id='x' to='localhost'><q xmlns='urn:x'/></iq>",
	} {
		for st := byte(0); st < 3; st++ {
			f.Add(st, []byte(s))
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := memstore.New("n1")
	r := router.New(router.Config{Domain: "localhost", Node: "n1", Store: store, Logger: log})
	a := accounts.New(store, "localhost", nil)
	if err := a.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	r.SetAccounts(a)
	a.Create(context.Background(), "alice", "secret")
	a.Create(context.Background(), "bob", "secret")
	// No throttling here: a blocked address sleeps a second per attempt.
	srv := New(Config{Domain: "localhost", Limits: xmlstream.DefaultLimits(), AllowRegistration: true, SMTimeout: time.Millisecond,
		AuthFailMax: 1 << 30, Logger: log}, r, a)
	hdr := "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
	f.Fuzz(func(t *testing.T, state byte, data []byte) {
		dec := xmlstream.NewDecoder(bytes.NewReader(append([]byte(hdr), data...)), xmlstream.DefaultLimits())
		if _, err := dec.StreamHeader(); err != nil {
			return
		}
		c := newConn(srv, discardConn{}, false)
		c.dec, c.secure, c.authEnd = dec, true, time.Now().Add(time.Minute)
		var s *session
		switch state % 3 {
		case 1:
			c.authed, c.user = true, "alice"
		case 2:
			c.authed, c.user = true, "alice"
			s = &session{srv: srv, id: randomID(), jid: jid.MustParse("alice@localhost/fuzz"), since: time.Now()}
			c.sess = s
			s.attach(c, nil, false)
			r.Bind(context.Background(), s)
		}
		for i := 0; i < 64; i++ {
			el, err := dec.Next()
			if err != nil {
				break
			}
			switch {
			case !c.authed:
				err = c.preAuth(el)
			case c.sess == nil:
				err = c.preBind(el)
			default:
				err = c.established(el)
			}
			if err != nil {
				break
			}
		}
		if c.sess != nil {
			c.sess.markClosing()
			c.sess.terminate()
		}
		if ok, _ := a.Exists(context.Background(), "alice"); !ok { // removed in-band
			a.Create(context.Background(), "alice", "secret")
		}
	})
}
