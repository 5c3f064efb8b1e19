package xmlstream

import "testing"

func sharedMessage() *Element {
	m := New(NSClient, "message", "type", "groupchat", "from", "room@conference.example/nick")
	m.Append(New(NSClient, "body").AppendText("hi"), New("urn:xmpp:sid:0", "stanza-id", "by", "room@conference.example", "id", "1"))
	return m
}

// A copy's changes, by the means Element allows, never show in the original or
// in another copy that shares the same children.
func TestCopySharedKeepsOthersIntact(t *testing.T) {
	m := sharedMessage()
	m.Nodes = append(make([]Node, 0, 8), m.Nodes...) // spare capacity: Append must not use it
	a, b := m.CopyShared(), m.CopyShared()
	a.SetAttr("to", "a@example/r")
	b.SetAttr("to", "b@example/r")
	if a.Nodes[0] != m.Nodes[0] || b.Nodes[1] != m.Nodes[1] {
		t.Fatal("CopyShared copied the children")
	}
	a.RemoveChildren("urn:xmpp:sid:0", "stanza-id")
	a.Append(New("urn:xmpp:delay", "delay"))
	b.Append(New("urn:xmpp:hints", "store"))
	want := `<message type='groupchat' from='room@conference.example/nick'><body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' by='room@conference.example' id='1'/></message>`
	if got := string(AppendElement(nil, m, NSClient)); got != want {
		t.Fatalf("original changed:\n got %s\nwant %s", got, want)
	}
	if got, want := string(AppendElement(nil, a, NSClient)), `<message type='groupchat' from='room@conference.example/nick' to='a@example/r'><body>hi</body><delay xmlns='urn:xmpp:delay'/></message>`; got != want {
		t.Fatalf("copy a:\n got %s\nwant %s", got, want)
	}
	if got, want := string(AppendElement(nil, b, NSClient)), `<message type='groupchat' from='room@conference.example/nick' to='b@example/r'><body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' by='room@conference.example' id='1'/><store xmlns='urn:xmpp:hints'/></message>`; got != want {
		t.Fatalf("copy b:\n got %s\nwant %s", got, want)
	}
	if m.Attr("to") != "" {
		t.Fatal("a copy's attribute reached the original")
	}
}

// RemoveChildren gives the element a new slice when it removes something (the
// old array may be shared) and keeps the slice when nothing matches.
func TestRemoveChildrenLeavesTheOldArray(t *testing.T) {
	m := sharedMessage()
	old := m.Nodes
	m.RemoveChildren("", "absent")
	if &m.Nodes[0] != &old[0] {
		t.Fatal("nothing removed, yet a new slice")
	}
	m.RemoveChildren(NSClient, "body")
	if len(m.Nodes) != 1 || m.Nodes[0].(*Element).Local != "stanza-id" {
		t.Fatalf("after removing the body: %v", m.Nodes)
	}
	if old[0].(*Element).Local != "body" || old[1].(*Element).Local != "stanza-id" {
		t.Fatal("RemoveChildren wrote into the old array")
	}
	m.RemoveChildren("", "stanza-id")
	if len(m.Nodes) != 0 {
		t.Fatalf("after removing everything: %v", m.Nodes)
	}
}
