package c2s

import (
	"strings"
	"testing"

	"xedge/xmppd/xmlstream"
)

func parseStanza(t *testing.T, s string) *xmlstream.Element {
	t.Helper()
	hdr := "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
	dec := xmlstream.NewDecoder(strings.NewReader(hdr+s), xmlstream.DefaultLimits())
	if _, err := dec.StreamHeader(); err != nil {
		t.Fatal(err)
	}
	e, err := dec.Next()
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return e
}

// What an inactive client gets at once (XEP-0352): everything but presence,
// standalone chat states and PEP notifications, carbon copies judged by what
// they carry. Receipts, markers and call proposals used to wait, being body-less.
func TestUrgentForInactiveClients(t *testing.T) {
	cases := []struct {
		name   string
		stanza string
		urgent bool
	}{
		{"presence", "<presence from='a@localhost/x'/>", false},
		{"iq", "<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>", true},
		{"body", "<message type='chat'><body>hi</body></message>", true},
		{"subject", "<message type='groupchat'><subject>s</subject></message>", true},
		{"error", "<message type='error'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", true},
		{"chat state", "<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", false},
		{"chat state with metadata", "<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/><thread>t</thread>" +
			"<no-store xmlns='urn:xmpp:hints'/><origin-id xmlns='urn:xmpp:sid:0' id='o'/></message>", false},
		{"PEP notification", "<message type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'/></event></message>", false},
		{"chat state beside a body", "<message type='chat'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>", true},
		{"receipt", "<message><received xmlns='urn:xmpp:receipts' id='m1'/></message>", true},
		{"displayed marker", "<message type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>", true},
		{"call proposal", "<message><propose xmlns='urn:xmpp:jingle-message:0' id='c1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>", true},
		{"OMEMO key transport", "<message><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted></message>", true},
		{"empty message", "<message/>", true},
		{"carbon of a chat state", "<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>" +
			"<message xmlns='jabber:client' type='chat'><paused xmlns='http://jabber.org/protocol/chatstates'/></message></forwarded></received></message>", false},
		{"carbon of a message", "<message><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>" +
			"<message xmlns='jabber:client' type='chat'><body>hi</body></message></forwarded></sent></message>", true},
		{"carbon of a receipt", "<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>" +
			"<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='m1'/></message></forwarded></received></message>", true},
		{"carbon without a message", "<message><received xmlns='urn:xmpp:carbons:2'/></message>", true},
	}
	for _, c := range cases {
		if got := urgent(parseStanza(t, c.stanza)); got != c.urgent {
			t.Errorf("%s: urgent = %v, want %v", c.name, got, c.urgent)
		}
	}
}
