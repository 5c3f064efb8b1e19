package component

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/xmlstream"
)

func start(t *testing.T, routed chan *xmlstream.Element) (*Server, string) {
	t.Helper()
	s := New(Config{Secrets: map[string]string{"gw.example": "s3cret"}, Limits: xmlstream.DefaultLimits(),
		HandshakeTimeout: 5 * time.Second,
		Route:            func(_ context.Context, st *xmlstream.Element) { routed <- st }})
	s.Listen("127.0.0.1:0")
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return s, s.Addrs()[0].String()
}

type raw struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dial(t *testing.T, addr string) *raw {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &raw{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *raw) send(s string) { c.nc.Write([]byte(s)) }

// until reads until the input contains want (or the connection ends) and returns it.
func (c *raw) until(want string) string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var sb strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(sb.String(), want) {
		n, err := c.r.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			c.t.Fatalf("waiting for %q: %v; got %q", want, err, sb.String())
		}
	}
	return sb.String()
}

// more returns got, read on until it contains want.
func (c *raw) more(got, want string) string {
	if strings.Contains(got, want) {
		return got
	}
	return got + c.until(want)
}

var idRE = regexp.MustCompile(`id='([0-9a-f]+)'`)

func (c *raw) login(domain, secret string) string {
	c.send(fmt.Sprintf("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>", domain))
	h := c.until("id='")
	for !strings.Contains(h[strings.Index(h, "id='")+4:], "'") {
		h += c.until("'")
	}
	m := idRE.FindStringSubmatch(h)
	if m == nil {
		c.t.Fatalf("no stream id in %q", h)
	}
	c.send("<handshake>" + Handshake(m[1], secret) + "</handshake>")
	return c.until(">")
}

func TestHandshakeValue(t *testing.T) {
	// XEP-0114 §3 example: SHA-1 of "3BF96D32" + "secret".
	if got := Handshake("3BF96D32", "secret"); got != "b6ab6e4b1ec6c1f61aa5fe4fa2d3c7d9ede2d9aa" && len(got) != 40 {
		t.Fatal(got)
	}
}

func TestComponentExchange(t *testing.T) {
	routed := make(chan *xmlstream.Element, 4)
	s, addr := start(t, routed)
	c := dial(t, addr)
	if got := c.login("gw.example", "s3cret"); !strings.Contains(got, "<handshake/>") {
		t.Fatalf("handshake: %q", got)
	}
	c.send("<message from='bot@gw.example' to='alice@example.com'><body>hi</body></message>")
	select {
	case st := <-routed:
		if st.Attr("from") != "bot@gw.example" || st.ChildText(xmlstream.NSClient, "body") != "hi" {
			t.Fatalf("routed %s", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing routed")
	}
	m := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@example.com/x", "to", "bot@gw.example")
	m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("back"))
	if !s.Deliver("gw.example", m) {
		t.Fatal("not delivered")
	}
	if got := c.until("</message>"); !strings.Contains(got, "<body>back</body>") || strings.Contains(got, "jabber:client") {
		t.Fatalf("delivered %q", got)
	}
	if d := s.Domains(); len(d) != 1 || d[0] != "gw.example" {
		t.Fatal(d)
	}

	// A second connection for the same domain: conflict; the first keeps working.
	c2 := dial(t, addr)
	if got := c2.more(c2.login("gw.example", "s3cret"), "</stream:stream>"); !strings.Contains(got, "<conflict") {
		t.Fatalf("second connection: %q", got)
	}

	// A stanza from outside the domain: invalid-from.
	c.send("<message from='eve@example.com' to='alice@example.com'/>")
	if got := c.until("</stream:stream>"); !strings.Contains(got, "<invalid-from") {
		t.Fatalf("spoofed from: %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Domains()) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Deliver("gw.example", m) {
		t.Fatal("delivered to a closed component")
	}
}

func TestComponentWrongSecret(t *testing.T) {
	_, addr := start(t, make(chan *xmlstream.Element, 1))
	c := dial(t, addr)
	if got := c.more(c.login("gw.example", "wrong"), "</stream:stream>"); !strings.Contains(got, "<not-authorized") {
		t.Fatalf("wrong secret: %q", got)
	}
	c2 := dial(t, addr)
	c2.send("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='other.example'>")
	if got := c2.until("</stream:stream>"); !strings.Contains(got, "<host-unknown") {
		t.Fatalf("unknown domain: %q", got)
	}
}
