package xmlstream

import (
	"strings"
)

// Namespaces used throughout xmppd.
const (
	NSStream = "http://etherx.jabber.org/streams"
	NSClient = "jabber:client"
	NSServer = "jabber:server"
	NSXML    = "http://www.w3.org/XML/1998/namespace"
)

// Attr is one attribute. Space is the resolved namespace URI ("" for unprefixed
// attributes, NSXML for xml:lang). Namespace declarations (xmlns, xmlns:p) are not
// attributes: the decoder resolves them and the encoder re-creates what it needs.
type Attr struct {
	Space, Local, Value string
}

// Node is a child of an Element: either *Element or CharData.
type Node interface{ isNode() }

// CharData is text content, already unescaped.
type CharData string

func (CharData) isNode() {}

// Element is one XML element with its subtree. Space is the resolved namespace URI.
// Stanzas, stream features and nonzas are all Elements. An Element is owned by one
// goroutine at a time; Copy it before handing it to another.
//
// The exception is CopyShared: its copies share their children with the original
// (a room's copies of one message, one per occupant, each with its own 'to').
// Children are therefore read-only for everyone who handles a routed stanza:
// change a stanza's own attributes at will, and its children only by giving it
// a new Nodes slice (Append and RemoveChildren do: neither writes into an array
// another stanza may share), never a child element in place.
type Element struct {
	Space, Local string
	Attrs        []Attr
	Nodes        []Node
}

func (*Element) isNode() {}

// New returns an element in namespace space with alternating attribute name/value pairs
// (unprefixed attributes only; use SetAttrNS for others).
func New(space, local string, attrs ...string) *Element {
	e := &Element{Space: space, Local: local}
	for i := 0; i+1 < len(attrs); i += 2 {
		e.Attrs = append(e.Attrs, Attr{Local: attrs[i], Value: attrs[i+1]})
	}
	return e
}

// Attr returns the value of the unprefixed attribute local, or "".
func (e *Element) Attr(local string) string {
	for _, a := range e.Attrs {
		if a.Space == "" && a.Local == local {
			return a.Value
		}
	}
	return ""
}

// AttrNS returns the value of the attribute {space}local, or "".
func (e *Element) AttrNS(space, local string) string {
	for _, a := range e.Attrs {
		if a.Space == space && a.Local == local {
			return a.Value
		}
	}
	return ""
}

// SetAttr sets (or, with value "", removes) the unprefixed attribute local.
func (e *Element) SetAttr(local, value string) *Element { return e.SetAttrNS("", local, value) }

// SetAttrNS sets (or, with value "", removes) the attribute {space}local.
func (e *Element) SetAttrNS(space, local, value string) *Element {
	for i, a := range e.Attrs {
		if a.Space == space && a.Local == local {
			if value == "" {
				e.Attrs = append(e.Attrs[:i], e.Attrs[i+1:]...)
			} else {
				e.Attrs[i].Value = value
			}
			return e
		}
	}
	if value != "" {
		e.Attrs = append(e.Attrs, Attr{Space: space, Local: local, Value: value})
	}
	return e
}

// Lang returns xml:lang, or "".
func (e *Element) Lang() string { return e.AttrNS(NSXML, "lang") }

// Child returns the first child element with the given namespace and local name.
// An empty space matches any namespace.
func (e *Element) Child(space, local string) *Element {
	for _, n := range e.Nodes {
		if c, ok := n.(*Element); ok && c.Local == local && (space == "" || c.Space == space) {
			return c
		}
	}
	return nil
}

// Children returns the child elements (text nodes skipped).
func (e *Element) Children() []*Element {
	var out []*Element
	for _, n := range e.Nodes {
		if c, ok := n.(*Element); ok {
			out = append(out, c)
		}
	}
	return out
}

// FirstChild returns the first child element, or nil.
func (e *Element) FirstChild() *Element {
	for _, n := range e.Nodes {
		if c, ok := n.(*Element); ok {
			return c
		}
	}
	return nil
}

// Text returns the concatenated character data directly inside e.
func (e *Element) Text() string {
	var b strings.Builder
	for _, n := range e.Nodes {
		if t, ok := n.(CharData); ok {
			b.WriteString(string(t))
		}
	}
	return b.String()
}

// ChildText returns the text of the first matching child, or "".
func (e *Element) ChildText(space, local string) string {
	if c := e.Child(space, local); c != nil {
		return c.Text()
	}
	return ""
}

// Append adds children and returns e.
func (e *Element) Append(children ...Node) *Element {
	e.Nodes = append(e.Nodes, children...)
	return e
}

// AppendText adds a text node and returns e.
func (e *Element) AppendText(s string) *Element {
	if s != "" {
		e.Nodes = append(e.Nodes, CharData(s))
	}
	return e
}

// RemoveChildren removes every child element matching space and local. When one
// matches, e gets a new Nodes slice: the old array, which copies made with
// CopyShared may share, is left as it was.
func (e *Element) RemoveChildren(space, local string) {
	e.Nodes = e.NodesWithout(func(c *Element) bool {
		return c.Local == local && (space == "" || c.Space == space)
	})
}

// NodesWithout returns e's nodes less the child elements drop reports: e.Nodes
// itself when it drops none, else a new slice (e.Nodes is not changed).
func (e *Element) NodesWithout(drop func(c *Element) bool) []Node {
	for i, n := range e.Nodes {
		if c, ok := n.(*Element); ok && drop(c) {
			out := make([]Node, i, len(e.Nodes)-1)
			copy(out, e.Nodes[:i])
			for _, n := range e.Nodes[i+1:] {
				if c, ok := n.(*Element); ok && drop(c) {
					continue
				}
				out = append(out, n)
			}
			return out
		}
	}
	return e.Nodes
}

// CopyShared returns a copy of e with its own attributes (room for one more)
// whose children are e's own, shared: see Element for what that asks of
// everyone who handles either. Its Nodes slice has no spare capacity, so Append
// on the copy allocates a new array rather than write into e's.
func (e *Element) CopyShared() *Element {
	c := &Element{Space: e.Space, Local: e.Local, Attrs: make([]Attr, len(e.Attrs), len(e.Attrs)+1)}
	copy(c.Attrs, e.Attrs)
	if len(e.Nodes) > 0 {
		c.Nodes = e.Nodes[:len(e.Nodes):len(e.Nodes)]
	}
	return c
}

// Copy returns a deep copy.
func (e *Element) Copy() *Element {
	c := &Element{Space: e.Space, Local: e.Local}
	if len(e.Attrs) > 0 {
		c.Attrs = append([]Attr(nil), e.Attrs...)
	}
	if len(e.Nodes) > 0 {
		c.Nodes = make([]Node, len(e.Nodes))
		for i, n := range e.Nodes {
			if ce, ok := n.(*Element); ok {
				c.Nodes[i] = ce.Copy()
			} else {
				c.Nodes[i] = n
			}
		}
	}
	return c
}
