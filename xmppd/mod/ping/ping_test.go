package ping

import (
	"context"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/xmlstream"
)

func TestPing(t *testing.T) {
	h := modtest.NewHost("example.org", "alice")
	if err := New().Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	a := h.Connect("alice@example.org/a")
	h.Send(a, xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "p", "to", "example.org").Append(xmlstream.New(NS, "ping")))
	if got := modtest.Find(a.Take(), "iq", "result"); len(got) != 1 || got[0].FirstChild() != nil {
		t.Fatalf("ping: %+v", got)
	}
	h.Send(a, xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "id", "p", "to", "example.org").Append(xmlstream.New(NS, "ping")))
	if got := modtest.Find(a.Take(), "iq", "error"); len(got) != 1 {
		t.Fatal("ping set should be an error")
	}
}
