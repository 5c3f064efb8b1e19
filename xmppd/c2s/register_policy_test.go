package c2s

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

func TestRegistrationPolicyByListener(t *testing.T) {
	s := &Server{cfg: Config{AllowRegistration: true}}
	lo := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5222}
	lo6 := &net.TCPAddr{IP: net.IPv6loopback, Port: 5222}
	any4 := &net.TCPAddr{IP: net.IPv4zero, Port: 5222}
	lan := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5222}
	cases := []struct {
		policy string
		addr   net.Addr
		want   bool
	}{
		{"", lan, true}, // no policy set: AllowRegistration decides
		{RegisterLoopback, lo, true},
		{RegisterLoopback, lo6, true},
		{RegisterLoopback, any4, false}, // a wildcard listener serves the network
		{RegisterLoopback, lan, false},
		{RegisterLoopback, nil, false}, // WebSocket streams: only with allow
		{RegisterAllow, lan, true},
		{RegisterAllow, nil, true},
		{RegisterDeny, lo, false},
	}
	for _, c := range cases {
		s.regPolicy = c.policy
		if got := s.registrationOn(c.addr, nil); got != c.want {
			t.Errorf("policy %q on %v: got %v, want %v", c.policy, c.addr, got, c.want)
		}
	}
	if err := s.SetRegistration("sometimes"); err == nil {
		t.Error("unknown policy accepted")
	}
}

func TestRegistrationRefusedOffPolicy(t *testing.T) {
	e := start(t, nil)
	if err := e.srv.SetRegistration(RegisterLoopback); err != nil {
		t.Fatal(err)
	}
	c := testenv.Dial(t, e.addr) // the listener is bound to 127.0.0.1
	if f := c.StartTLS("localhost"); !strings.Contains(f, "iq-register") {
		t.Fatalf("register feature not offered on a loopback listener: %s", f)
	}
	c.Send("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>dave</username><password>p</password></query></iq>")
	c.Expect("<iq type='result' id='r1'/>", 5*time.Second)
	if ok, _ := e.srv.accounts.Exists(context.Background(), "dave"); !ok {
		t.Fatal("registration on a loopback listener did not create the account")
	}

	e.srv.SetRegistration(RegisterDeny)
	c = testenv.Dial(t, e.addr)
	if f := c.StartTLS("localhost"); strings.Contains(f, "iq-register") {
		t.Fatalf("register feature offered against the policy: %s", f)
	}
	c.Send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>erin</username><password>p</password></query></iq>")
	if got := c.Expect("</iq>", 5*time.Second); !strings.Contains(got, "<not-allowed") {
		t.Fatalf("got %s", got)
	}
	if ok, _ := e.srv.accounts.Exists(context.Background(), "erin"); ok {
		t.Fatal("account created against the policy")
	}
	c.AuthPlain("localhost", "alice", "secret") // the stream is still usable
}
