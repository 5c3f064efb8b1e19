package c2s

import (
	"sync/atomic"

	"xedge/xmppd/xmlstream"
)

// A room's message reaches every occupant as its own copy (mod/muc makes one per
// occupant, each with its own 'to'), and each session's writer serialized its
// copy in full: in a 200-occupant room the same bytes were produced 200 times,
// ~7% of xmppd's CPU in the benchmark's MUC workload. fanoutEnc keeps the
// serialization of the last few groupchat messages without their 'to'; a copy
// that is the same stanza except for a last 'to' attribute gets those bytes with
// its own 'to' spliced in.
//
// A copy is served from an entry only if its name and attributes compare
// equal, 'to' apart, and its children are the entry's: the same array (the
// room's copies share their children, xmlstream.Element.CopyShared, and
// children are read-only once routed), or else equal node by node (copies
// decoded one by one, as another node forwards them). Entries are searched
// newest first, by the children's array before any content is compared: with
// 40 room messages in flight, the entry of a copy's message is one of the last
// 40 made, and a miss used to serialize the copy in full. An entry
// holds its own attributes and the children of the stanza it was made from. A
// copy that a hook changed for its recipient (a forged stanza-id stripped, an
// element added: a new Nodes slice) differs and is serialized in full. Equal
// trees serialize to equal bytes (xmlstream.AppendElement is a function of the
// tree and the stream's namespace), so the output is byte for byte what
// AppendElement writes.

// fanoutSlots is how many recent stanzas are kept (the senders of one room
// interleave, and several rooms' messages may be in flight).
const fanoutSlots = 64

type fanoutEntry struct {
	tmpl *xmlstream.Element // the stanza without its 'to'; never changed
	head []byte             // its start tag without the closing '>' or "/>"
	tail []byte             // the rest: "/>" or ">children</message>"
}

type fanoutCache struct {
	slots [fanoutSlots]atomic.Pointer[fanoutEntry]
	next  atomic.Uint32
}

// fanoutEnc is shared by every session of the process (entries are immutable
// and matched by content, so servers in one process may share it).
var fanoutEnc fanoutCache

// appendStanza appends st serialized as a child of a jabber:client stream.
func (f *fanoutCache) appendStanza(buf []byte, st *xmlstream.Element) []byte {
	to, ok := fanoutTo(st)
	if !ok {
		return xmlstream.AppendElement(buf, st, xmlstream.NSClient)
	}
	if e := f.find(st); e != nil {
		buf = append(buf, e.head...)
		buf = append(buf, " to='"...)
		buf = append(buf, to...)
		buf = append(buf, '\'')
		return append(buf, e.tail...)
	}
	start := len(buf)
	buf = xmlstream.AppendElement(buf, st, xmlstream.NSClient)
	f.add(st, buf[start:])
	return buf
}

// find returns the newest entry st may be served from, or nil: first among the
// entries made from a copy sharing st's children, then by content.
func (f *fanoutCache) find(st *xmlstream.Element) *fanoutEntry {
	last := f.next.Load()
	if len(st.Nodes) > 0 {
		for i := uint32(0); i < fanoutSlots; i++ {
			e := f.slots[(last-i)%fanoutSlots].Load()
			if e != nil && sharesNodes(st, e.tmpl) && sameAttrsButTo(st, e.tmpl) {
				return e
			}
		}
	}
	for i := uint32(0); i < fanoutSlots; i++ {
		if e := f.slots[(last-i)%fanoutSlots].Load(); e != nil && sameButTo(st, e.tmpl) {
			return e
		}
	}
	return nil
}

// add makes an entry of st, whose full serialization is full.
func (f *fanoutCache) add(st *xmlstream.Element, full []byte) {
	tmpl := &xmlstream.Element{Space: st.Space, Local: st.Local,
		Attrs: append([]xmlstream.Attr(nil), st.Attrs[:len(st.Attrs)-1]...), Nodes: st.Nodes[:len(st.Nodes):len(st.Nodes)]}
	bare := &xmlstream.Element{Space: tmpl.Space, Local: tmpl.Local, Attrs: tmpl.Attrs}
	head := xmlstream.AppendElement(nil, bare, xmlstream.NSClient) // "<message ... />"
	head = head[:len(head)-2]
	whole := xmlstream.AppendElement(make([]byte, 0, len(full)), tmpl, xmlstream.NSClient)
	if len(whole) < len(head) || string(whole[:len(head)]) != string(head) {
		return // not the shape assumed: never shared
	}
	e := &fanoutEntry{tmpl: tmpl, head: head, tail: whole[len(head):]}
	f.slots[f.next.Add(1)%fanoutSlots].Store(e)
}

// fanoutTo returns the 'to' of a groupchat message whose last attribute it is,
// if it needs no escaping (printable ASCII other than & < > ' "): only such
// stanzas are shared.
func fanoutTo(st *xmlstream.Element) (string, bool) {
	if st == nil || st.Local != "message" || st.Space != xmlstream.NSClient || len(st.Attrs) < 2 {
		return "", false
	}
	last := st.Attrs[len(st.Attrs)-1]
	if last.Space != "" || last.Local != "to" || last.Value == "" {
		return "", false
	}
	grp := false
	for _, a := range st.Attrs[:len(st.Attrs)-1] {
		if a.Space == "" && a.Local == "to" {
			return "", false
		}
		if a.Space == "" && a.Local == "type" {
			grp = a.Value == "groupchat"
		}
	}
	if !grp {
		return "", false
	}
	for i := 0; i < len(last.Value); i++ {
		switch c := last.Value[i]; {
		case c < 0x20 || c >= 0x7f, c == '&', c == '<', c == '>', c == '\'', c == '"':
			return "", false
		}
	}
	return last.Value, true
}

// sameButTo reports whether st is tmpl plus a last attribute (its 'to').
func sameButTo(st, tmpl *xmlstream.Element) bool {
	if !sameAttrsButTo(st, tmpl) {
		return false
	}
	return sharesNodes(st, tmpl) || sameNodes(st.Nodes, tmpl.Nodes)
}

// sameAttrsButTo reports whether st's name and attributes are tmpl's plus a
// last attribute.
func sameAttrsButTo(st, tmpl *xmlstream.Element) bool {
	if st.Space != tmpl.Space || st.Local != tmpl.Local || len(st.Attrs) != len(tmpl.Attrs)+1 {
		return false
	}
	for i, a := range tmpl.Attrs {
		if st.Attrs[i] != a {
			return false
		}
	}
	return true
}

// sharesNodes reports whether st's children are tmpl's: the same array.
func sharesNodes(st, tmpl *xmlstream.Element) bool {
	return len(st.Nodes) == len(tmpl.Nodes) && (len(st.Nodes) == 0 || &st.Nodes[0] == &tmpl.Nodes[0])
}

func sameElement(a, b *xmlstream.Element) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Space != b.Space || a.Local != b.Local || len(a.Attrs) != len(b.Attrs) {
		return false
	}
	for i := range a.Attrs {
		if a.Attrs[i] != b.Attrs[i] {
			return false
		}
	}
	return sameNodes(a.Nodes, b.Nodes)
}

func sameNodes(a, b []xmlstream.Node) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		switch x := a[i].(type) {
		case *xmlstream.Element:
			y, ok := b[i].(*xmlstream.Element)
			if !ok || !sameElement(x, y) {
				return false
			}
		case xmlstream.CharData:
			y, ok := b[i].(xmlstream.CharData)
			if !ok || x != y {
				return false
			}
		default:
			return false // a node type the encoder may not write alike
		}
	}
	return true
}
