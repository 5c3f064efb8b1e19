package loadgen

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeServer speaks just enough XMPP over plain TCP for one SCRAM-SHA-1 login:
// stream, features, SASL, restart, bind, presence (ignored), ping.
func fakeServer(t *testing.T, ln net.Listener, pass string) {
	t.Helper()
	nc, err := ln.Accept()
	if err != nil {
		return
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	sc := NewScanner(nc)
	send := func(s string) { _, _ = nc.Write([]byte(s)) }
	hdr := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='example.com' version='1.0'>"
	next := func() []byte {
		el, err := sc.Next()
		if err != nil {
			t.Errorf("fake server read: %v", err)
			return nil
		}
		return el
	}
	next() // stream header
	send(hdr + "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>")
	auth := next()
	cf, _ := base64.StdEncoding.DecodeString(Text(auth))
	bare := strings.TrimPrefix(string(cf), "n,,")
	cnonce := bare[strings.Index(bare, "r=")+2:]
	salt := []byte("saltsalt")
	sf := "r=" + cnonce + "srv,s=" + base64.StdEncoding.EncodeToString(salt) + ",i=4096"
	send("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString([]byte(sf)) + "</challenge>")
	resp := next()
	cfin, _ := base64.StdEncoding.DecodeString(Text(resp))
	without := string(cfin[:strings.Index(string(cfin), ",p=")])
	salted, _ := pbkdf2.Key(sha1.New, pass, salt, 4096, 20)
	mac := func(k []byte, m string) []byte { h := hmac.New(sha1.New, k); h.Write([]byte(m)); return h.Sum(nil) }
	ck := mac(salted, "Client Key")
	stored := sha1.Sum(ck)
	am := bare + "," + sf + "," + without
	sig := mac(stored[:], am)
	proof, _ := base64.StdEncoding.DecodeString(string(cfin[strings.Index(string(cfin), ",p=")+3:]))
	for i := range proof {
		proof[i] ^= sig[i]
	}
	if got := sha1.Sum(proof); !hmac.Equal(got[:], stored[:]) {
		send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>")
		return
	}
	v := base64.StdEncoding.EncodeToString(mac(mac(salted, "Server Key"), am))
	send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString([]byte("v="+v)) + "</success>")
	sc.Restart()
	next() // restarted stream header
	send(hdr + "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>")
	bind := next()
	send("<iq type='result' id='" + string(Attr(bind, "id")) + "'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.com/bench</jid></bind></iq>")
	next() // presence
	send("<presence from='bob@example.com/x'/>")
	ping := next()
	send("<iq type='result' id='" + string(Attr(ping, "id")) + "'/>")
	_, _ = sc.Next() // the client's </stream:stream>
}

func TestLoginAgainstFakeServer(t *testing.T) {
	for _, tc := range []struct {
		pass string
		ok   bool
	}{{"secret", true}, {"wrong", false}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); fakeServer(t, ln, "secret") }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := Login(ctx, Options{Addr: ln.Addr().String(), Domain: "example.com", Timeout: 5 * time.Second}, "alice", tc.pass)
		cancel()
		if tc.ok {
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			if c.JID != "alice@example.com/bench" {
				t.Errorf("jid %q", c.JID)
			}
			// The presence that arrived while waiting for the ping answer is kept.
			el, err := c.Next()
			if err != nil || string(Name(el)) != "presence" || string(Attr(el, "from")) != "bob@example.com/x" {
				t.Errorf("pending presence: %q %v", el, err)
			}
			c.Close()
		} else if err == nil || errors.Is(err, ErrServerSignature) {
			t.Fatalf("wrong password: err = %v, want a SASL failure", err)
		}
		<-done
		ln.Close()
	}
}
