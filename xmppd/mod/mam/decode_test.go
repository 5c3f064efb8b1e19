package mam

import (
	"testing"

	"xedge/xmppd/xmlstream"
)

// decodeMessage reuses pooled decoders: an element it returned must not change
// when the decoder parses the next message, and a message that fails to parse
// must not spoil the next one.
func TestDecodeMessageReuse(t *testing.T) {
	first, err := decodeMessage([]byte("<message xmlns='jabber:client' type='chat' to='a@x'><body>one</body></message>"))
	if err != nil {
		t.Fatal(err)
	}
	want := string(xmlstream.AppendElement(nil, first, xmlstream.NSClient))
	if _, err := decodeMessage([]byte("<message xmlns='jabber:client'><body>unclosed")); err == nil {
		t.Fatal("a truncated message decoded")
	}
	for i := 0; i < 100; i++ {
		m, err := decodeMessage([]byte("<message xmlns='jabber:client' type='groupchat' to='b@y'><body>two two two</body></message>"))
		if err != nil {
			t.Fatalf("after a failed decode: %v", err)
		}
		if got := m.ChildText("", "body"); got != "two two two" {
			t.Fatalf("body %q", got)
		}
	}
	if got := string(xmlstream.AppendElement(nil, first, xmlstream.NSClient)); got != want {
		t.Fatalf("first message changed by later decodes: %s, was %s", got, want)
	}
	if first.ChildText("", "body") != "one" {
		t.Fatalf("first body %q", first.ChildText("", "body"))
	}
}

// decodeMessage reuses pooled decoders that read the stream header once: a
// stored message that does not parse leaves nothing behind for the next one.
func TestDecodeMessageAfterABadOne(t *testing.T) {
	for range 3 {
		if _, err := decodeMessage([]byte("<message xmlns:x='urn:x'><x:y>")); err == nil {
			t.Fatal("a message cut short decoded")
		}
		el, err := decodeMessage([]byte("<message type='chat'><body>ok</body></message>"))
		if err != nil || el.Space != xmlstream.NSClient || el.ChildText(xmlstream.NSClient, "body") != "ok" {
			t.Fatalf("after a bad one: %v, %v", el, err)
		}
	}
}
