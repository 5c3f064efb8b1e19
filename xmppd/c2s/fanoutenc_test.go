package c2s

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"xedge/xmppd/xmlstream"
)

// roomMessage is a room's message as mod/muc builds it before addressing it.
func roomMessage(body string) *xmlstream.Element {
	m := xmlstream.New(xmlstream.NSClient, "message", "type", "groupchat", "from", "room@conference.example.org/nick", "id", "m1")
	m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body),
		xmlstream.New("urn:xmpp:sid:0", "stanza-id", "by", "room@conference.example.org", "id", "s1"))
	return m
}

func addressed(m *xmlstream.Element, to string) *xmlstream.Element {
	c := m.Copy()
	c.SetAttr("to", to)
	return c
}

func checkSame(t *testing.T, f *fanoutCache, st *xmlstream.Element) {
	t.Helper()
	want := string(xmlstream.AppendElement(nil, st, xmlstream.NSClient))
	if got := string(f.appendStanza([]byte("prefix"), st)); got != "prefix"+want {
		t.Fatalf("serialized\n%s\nwant\n%s", got, "prefix"+want)
	}
}

// TestFanoutEncodingShared: the copies of one room message, each with its own
// 'to', are served from one serialization, byte for byte what AppendElement
// writes; a copy a hook changed, a 'to' that needs escaping, a chat message and
// a change made to the message after its first copy are serialized in full, and
// correctly.
func TestFanoutEncodingShared(t *testing.T) {
	var f fanoutCache
	m := roomMessage("hello <world> & 'you'")
	for i := range 200 {
		checkSame(t, &f, addressed(m, fmt.Sprintf("u%d@example.org/r%d", i, i)))
	}
	if shared(&f, addressed(m, "v@example.org/r")) != 1 {
		t.Fatal("the copies were not served from one entry")
	}
	// An occupant's copy with the room's stanza-id removed (a hook's work).
	c := addressed(m, "x@example.org/r")
	c.RemoveChildren("urn:xmpp:sid:0", "stanza-id")
	checkSame(t, &f, c)
	// Another child added.
	c = addressed(m, "x@example.org/r")
	c.Append(xmlstream.New("urn:xmpp:delay", "delay", "stamp", "2026-01-01T00:00:00Z"))
	checkSame(t, &f, c)
	// A body changed in place in the message the entry was made from.
	m.Child(xmlstream.NSClient, "body").Nodes[0] = xmlstream.CharData("changed")
	if shared(&f, addressed(m, "y@example.org/r")) != 0 {
		t.Fatal("a changed message was served from the old serialization")
	}
	checkSame(t, &f, addressed(m, "y@example.org/r"))
	// 'to' needing escaping, or not ASCII.
	for _, to := range []string{"z@example.org/it's", "z@example.org/a&b", "z@example.org/ü", "z@example.org/\"q\""} {
		checkSame(t, &f, addressed(m, to))
	}
	// Not a groupchat, or 'to' not last, or twice: never shared, still correct.
	chat := addressed(m, "c@example.org/r")
	chat.SetAttr("type", "chat")
	checkSame(t, &f, chat)
	notLast := addressed(m, "c@example.org/r")
	notLast.Attrs = append(notLast.Attrs, xmlstream.Attr{Local: "xml:lang", Value: "en"})
	checkSame(t, &f, notLast)
	// An attribute in a foreign namespace and an empty message.
	ns := addressed(m, "d@example.org/r")
	ns.Attrs = append([]xmlstream.Attr{{Space: "urn:x", Local: "a", Value: "1"}}, ns.Attrs...)
	checkSame(t, &f, ns)
	checkSame(t, &f, addressed(ns.Copy(), "e@example.org/r"))
	empty := xmlstream.New(xmlstream.NSClient, "message", "type", "groupchat", "from", "room@c.example.org/n")
	checkSame(t, &f, addressed(empty, "f@example.org/r"))
	checkSame(t, &f, addressed(empty, "g@example.org/r"))
}

// TestFanoutEncodingCopyShared: copies made as mod/muc makes them (children
// shared) are served from the entry by identity; one that a hook changed the
// children of (a new slice, as Element asks) is serialized in full, and the
// change reaches neither the entry nor the next copies.
func TestFanoutEncodingCopyShared(t *testing.T) {
	var f fanoutCache
	m := roomMessage("shared")
	to := func(i int) *xmlstream.Element {
		c := m.CopyShared()
		c.Attrs = append(c.Attrs, xmlstream.Attr{Local: "to", Value: fmt.Sprintf("u%d@example.org/r", i)})
		return c
	}
	checkSame(t, &f, to(0))
	c := to(1)
	c.RemoveChildren("urn:xmpp:sid:0", "stanza-id")
	if shared(&f, c) != 0 {
		t.Fatal("a copy without the stanza-id was served from the entry")
	}
	checkSame(t, &f, c)
	c = to(2)
	c.Append(xmlstream.New("urn:xmpp:delay", "delay"))
	checkSame(t, &f, c)
	for i := 3; i < 10; i++ {
		if shared(&f, to(i)) != 1 {
			t.Fatalf("copy %d not served from the entry", i)
		}
		checkSame(t, &f, to(i))
	}
}

// TestFanoutEncodingInterleaved: the copies of 40 room messages in flight at
// once (20 senders keeping 2 each, as the benchmark's MUC workload does), written
// round robin, are each served from their message's entry once it is made.
func TestFanoutEncodingInterleaved(t *testing.T) {
	var f fanoutCache
	msgs := make([]*xmlstream.Element, 40)
	for i := range msgs {
		msgs[i] = roomMessage(fmt.Sprintf("message %d", i))
		msgs[i].SetAttr("id", fmt.Sprintf("m%d", i))
	}
	to := func(m *xmlstream.Element, i int) *xmlstream.Element {
		c := m.CopyShared()
		c.Attrs = append(c.Attrs, xmlstream.Attr{Local: "to", Value: fmt.Sprintf("u%d@example.org/r", i)})
		return c
	}
	for _, m := range msgs {
		checkSame(t, &f, to(m, 0))
	}
	for occ := 1; occ < 20; occ++ {
		for j, m := range msgs {
			c := to(m, occ)
			if shared(&f, c) != 1 {
				t.Fatalf("copy %d of message %d serialized in full", occ, j)
			}
			checkSame(t, &f, c)
		}
	}
}

// TestFanoutEncodingRandom: random groupchat trees and random changes to their
// copies serialize exactly as AppendElement does.
func TestFanoutEncodingRandom(t *testing.T) {
	var f fanoutCache
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"a", "b", "<", "&", "'", "\"", "ü", "x y", "\t", ""}
	spaces := []string{xmlstream.NSClient, "urn:a", "urn:b", ""}
	var tree func(depth int) *xmlstream.Element
	tree = func(depth int) *xmlstream.Element {
		e := xmlstream.New(spaces[r.IntN(len(spaces))], []string{"x", "body", "y"}[r.IntN(3)])
		for range r.IntN(3) {
			e.Attrs = append(e.Attrs, xmlstream.Attr{Space: []string{"", "", "urn:c"}[r.IntN(3)], Local: []string{"k", "v", "id"}[r.IntN(3)], Value: words[r.IntN(len(words))]})
		}
		for range r.IntN(4) {
			if depth > 0 && r.IntN(2) == 0 {
				e.Append(tree(depth - 1))
			} else {
				e.AppendText(words[r.IntN(len(words))])
			}
		}
		return e
	}
	sharedAny := 0
	for range 300 {
		m := xmlstream.New(xmlstream.NSClient, "message", "type", "groupchat", "from", "r@c.example.org/"+words[r.IntN(3)])
		for range r.IntN(4) {
			m.Append(tree(2))
		}
		for j := range 5 {
			c := addressed(m, fmt.Sprintf("u%d@example.org/r", j))
			if r.IntN(3) == 0 && len(c.Nodes) > 0 {
				k := r.IntN(len(c.Nodes))
				switch n := c.Nodes[k].(type) {
				case *xmlstream.Element:
					if r.IntN(2) == 0 {
						n.SetAttr("k", words[r.IntN(len(words))])
					} else {
						n.Append(xmlstream.CharData(words[r.IntN(len(words))]))
					}
				case xmlstream.CharData:
					c.Nodes[k] = xmlstream.CharData(string(n) + "z")
				}
			}
			sharedAny += shared(&f, c)
			checkSame(t, &f, c)
		}
	}
	if sharedAny == 0 {
		t.Fatal("nothing shared")
	}
}

// BenchmarkFanoutEncoding: serializing the 200 copies of one room message,
// shared and in full.
func BenchmarkFanoutEncoding(b *testing.B) {
	m := roomMessage("1234567890123")
	copies := make([]*xmlstream.Element, 200)
	for i := range copies {
		copies[i] = addressed(m, fmt.Sprintf("u%d@example.org/r%d", i, i))
	}
	buf := make([]byte, 0, 4096)
	b.Run("shared", func(b *testing.B) {
		var f fanoutCache
		for b.Loop() {
			for _, c := range copies {
				buf = f.appendStanza(buf[:0], c)
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			for _, c := range copies {
				buf = xmlstream.AppendElement(buf[:0], c, xmlstream.NSClient)
			}
		}
	})
}

// shared reports (1) whether st would be served from an entry of f: it
// serializes st with a copy of f whose entries' tails are marked, and looks for
// the mark. f is not changed.
func shared(f *fanoutCache, st *xmlstream.Element) int {
	var g fanoutCache
	g.next.Store(f.next.Load())
	for i := range f.slots {
		if e := f.slots[i].Load(); e != nil {
			g.slots[i].Store(&fanoutEntry{tmpl: e.tmpl, head: e.head, tail: append(append([]byte(nil), e.tail...), "MARK"...)})
		}
	}
	if bytes.HasSuffix(g.appendStanza(nil, st), []byte("MARK")) {
		return 1
	}
	return 0
}
