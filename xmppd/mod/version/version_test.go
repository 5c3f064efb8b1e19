package version

import (
	"context"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
	xv "xedge/xmppd/version"
	"xedge/xmppd/xmlstream"
)

func TestVersion(t *testing.T) {
	h := modtest.NewHost("example.org", "alice")
	if err := New(false).Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	a := h.Connect("alice@example.org/a")
	h.Send(a, xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "v", "to", "example.org").Append(xmlstream.New(NS, "query")))
	got := modtest.Find(a.Take(), "iq", "result")
	if len(got) != 1 {
		t.Fatal("no result")
	}
	q := got[0].Child(NS, "query")
	if q.ChildText(NS, "name") != "xedge" || q.ChildText(NS, "version") != xv.Version || q.ChildText(NS, "os") == "" {
		t.Fatalf("%+v", q)
	}
	if got[0].Attr("from") != "example.org" || got[0].Attr("to") != "alice@example.org/a" {
		t.Fatalf("addresses %v", got[0].Attrs)
	}
}
