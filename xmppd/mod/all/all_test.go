package all

import (
	"context"
	"testing"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/xmlstream"
)

func TestModulesStartOnOneHost(t *testing.T) {
	h := modtest.NewHost("example.org", "alice")
	seen := map[string]bool{}
	for _, m := range Modules(Options{}) {
		if seen[m.Name()] {
			t.Fatalf("duplicate module %s", m.Name())
		}
		seen[m.Name()] = true
		if err := m.Start(context.Background(), h); err != nil {
			t.Fatalf("%s: %v", m.Name(), err)
		}
	}
	for _, n := range []string{"roster", "presence", "offline", "disco", "version", "ping", "carbons", "blocking", "vcard", "private"} {
		if !seen[n] {
			t.Errorf("module %s missing", n)
		}
	}
}

// Every module that writes answers a storage outage with a wait error and keeps
// serving afterwards.
func TestStorageUnavailableIsWait(t *testing.T) {
	h := modtest.NewHost("example.org", "alice")
	for _, m := range Modules(Options{}) {
		if err := m.Start(context.Background(), h); err != nil {
			t.Fatal(err)
		}
	}
	a := h.Connect("alice@example.org/a")
	writes := []*xmlstream.Element{
		xmlstream.New("jabber:iq:roster", "query").Append(xmlstream.New("jabber:iq:roster", "item", "jid", "x@y.example")),
		xmlstream.New("vcard-temp", "vCard").Append(xmlstream.New("vcard-temp", "FN").AppendText("A")),
		xmlstream.New("jabber:iq:private", "query").Append(xmlstream.New("test:ns", "x")),
		xmlstream.New("urn:xmpp:blocking", "block").Append(xmlstream.New("urn:xmpp:blocking", "item", "jid", "x@y.example")),
	}
	h.MemStore().SetFail(storage.ErrUnavailable)
	for _, w := range writes {
		r := h.IQ(a, "set", "", w.Copy())
		if r == nil || r.Attr("type") != "error" || r.Child("", "error").Attr("type") != "wait" || modtest.Cond(r) != "resource-constraint" {
			t.Errorf("%s during outage: %+v", w.Space, r)
		}
	}
	h.MemStore().SetFail(nil)
	for _, w := range writes {
		if r := h.IQ(a, "set", "", w.Copy()); r == nil || r.Attr("type") != "result" {
			t.Errorf("%s after outage: %+v", w.Space, r)
		}
	}
}

// Odd payloads to every IQ namespace get exactly one reply each, never a panic, and an
// error unless the request is a plausible one.
func TestOddPayloadsGetOneReply(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	for _, m := range Modules(Options{}) {
		if err := m.Start(context.Background(), h); err != nil {
			t.Fatal(err)
		}
	}
	a := h.Connect("alice@example.org/a")
	shapes := func(ns string) []*xmlstream.Element {
		return []*xmlstream.Element{
			xmlstream.New(ns, "query"),
			xmlstream.New(ns, "bogus"),
			xmlstream.New(ns, "query").AppendText("text"),
			xmlstream.New(ns, "query").Append(xmlstream.New(ns, "item")),
			xmlstream.New(ns, "query").Append(xmlstream.New(ns, "item", "jid", "@@")),
			xmlstream.New(ns, "query").Append(xmlstream.New("", "x")),
			xmlstream.New(ns, "block").Append(xmlstream.New(ns, "item", "jid", "")),
			xmlstream.New(ns, "vCard").Append(xmlstream.New(ns, "x").Append(xmlstream.New(ns, "y"))),
		}
	}
	for _, ns := range h.Namespaces() {
		for _, typ := range []string{"get", "set"} {
			for _, to := range []string{"", "example.org", "bob@example.org"} {
				for i, p := range shapes(ns) {
					r := h.IQ(a, typ, to, p)
					if r == nil {
						t.Errorf("%s %s to=%q shape %d: no reply", ns, typ, to, i)
						continue
					}
					if extra := modtest.Find(a.Take(), "iq", ""); len(extra) > 0 {
						for _, e := range extra {
							if e.Attr("type") == "result" || e.Attr("type") == "error" {
								t.Errorf("%s %s shape %d: second reply %+v", ns, typ, i, e)
							}
						}
					}
				}
			}
		}
	}
}
