package websocket

import (
	"strings"
	"testing"
)

func TestInboundOpenClose(t *testing.T) {
	b, err := inbound([]byte(`<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="example.org" version="1.0" xml:lang="en"/>`))
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{"<stream:stream ", "xmlns='jabber:client'", "xmlns:stream='http://etherx.jabber.org/streams'", "to='example.org'", "version='1.0'", "xml:lang='en'"} {
		if !strings.Contains(got, want) {
			t.Errorf("header %q lacks %q", got, want)
		}
	}
	if b, _ := inbound([]byte(`<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`)); string(b) != "</stream:stream>" {
		t.Errorf("close -> %q", b)
	}
	msg := `<message xmlns='jabber:client' to='a@b'><body>hi</body></message>`
	if b, _ := inbound([]byte(msg)); string(b) != msg {
		t.Errorf("stanza changed: %q", b)
	}
	// an <open/> in another namespace is an ordinary element
	if b, _ := inbound([]byte(`<open xmlns='urn:other'/>`)); string(b) != `<open xmlns='urn:other'/>` {
		t.Errorf("foreign open translated: %q", b)
	}
	for _, bad := range []string{"", "hello", "<a"} {
		if _, err := inbound([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSplitter(t *testing.T) {
	s := newSplitter()
	stream := `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='example.org' id='abc' version='1.0' xml:lang='en'>` +
		`<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>` +
		`<message to='a@b' x='1>2'><body>a &lt; b</body></message><presence/>` +
		`<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>` +
		`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='example.org' id='def' version='1.0'>` +
		`<stream:features/></stream:stream>`
	var got []string
	// feed byte by byte: element boundaries must not depend on write boundaries
	for i := 0; i < len(stream); i++ {
		msgs, err := s.write([]byte{stream[i]})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			got = append(got, string(m))
		}
	}
	want := []string{
		`<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.org' id='abc' version='1.0' xml:lang='en'/>`,
		`<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>`,
		`<message xmlns='jabber:client' to='a@b' x='1>2'><body>a &lt; b</body></message>`,
		`<presence xmlns='jabber:client'/>`,
		`<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`,
		`<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.org' id='def' version='1.0'/>`,
		`<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>`,
		`<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d messages %q, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("message %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
	if len(s.buf) != 0 {
		t.Errorf("%d bytes left buffered", len(s.buf))
	}
}

func TestURL(t *testing.T) {
	if u := URL("https://x.org:5443"); u != "wss://x.org:5443/xmpp-websocket" {
		t.Error(u)
	}
	if u := URL("http://127.0.0.1:80"); u != "ws://127.0.0.1:80/xmpp-websocket" {
		t.Error(u)
	}
}
