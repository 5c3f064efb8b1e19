package extdisco

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/xmlstream"
)

func TestParse(t *testing.T) {
	s, err := Parse("stun:stun.example.org:3478/udp, turn:[2001:db8::1]:3478/tcp,turns:turn.example.org:5349")
	if err != nil || len(s) != 3 || s[1].Host != "2001:db8::1" || s[1].Transport != "tcp" || s[2].Port != 5349 {
		t.Fatalf("%+v %v", s, err)
	}
	for _, bad := range []string{"stun.example.org", "ftp:x:21", "stun:x:0", "stun:x:1/sctp", "stun::1"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func ask(t *testing.T, h *modtest.Host, p *xmlstream.Element) *xmlstream.Element {
	t.Helper()
	s := h.Connect("alice@example.org/a")
	iq := xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "x1", "to", "example.org")
	iq.Append(p)
	h.Send(s, iq)
	out := s.Take()
	if len(out) != 1 {
		t.Fatalf("want one reply, got %d", len(out))
	}
	return out[0]
}

func TestServicesAndCredentials(t *testing.T) {
	svcs, _ := Parse("stun:stun.example.org:3478/udp,turn:turn.example.org:3478/udp")
	m := New(svcs, "s3cret", time.Hour)
	now := time.Unix(1_800_000_000, 0)
	m.now = func() time.Time { return now }
	h := modtest.NewHost("example.org", "alice")
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	r := ask(t, h, xmlstream.New(NS, "services"))
	got := r.String()
	if r.Attr("type") != "result" || strings.Count(got, "<service ") != 2 {
		t.Fatalf("services: %s", got)
	}
	user := "1800003600:alice"
	mac := hmac.New(sha1.New, []byte("s3cret"))
	mac.Write([]byte(user))
	pass := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !strings.Contains(got, "username='"+user+"'") || !strings.Contains(got, "password='"+pass+"'") {
		t.Errorf("TURN credentials (coturn use-auth-secret) missing: %s", got)
	}
	if strings.Contains(strings.SplitN(got, "turn.example.org", 2)[0], "password") {
		t.Errorf("credentials on the STUN entry: %s", got)
	}
	if r := ask(t, h, xmlstream.New(NS, "services", "type", "stun")); strings.Count(r.String(), "<service ") != 1 {
		t.Errorf("type filter: %s", r)
	}
	c := xmlstream.New(NS, "credentials")
	c.Append(xmlstream.New(NS, "service", "type", "turn", "host", "turn.example.org"))
	if r := ask(t, h, c); !strings.Contains(r.String(), "password=") {
		t.Errorf("credentials: %s", r)
	}
	c = xmlstream.New(NS, "credentials")
	c.Append(xmlstream.New(NS, "service", "host", "nowhere.example"))
	if r := ask(t, h, c); !strings.Contains(r.String(), "item-not-found") {
		t.Errorf("unknown service: %s", r)
	}
}
