package xmlstream

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// StreamClose is the closing tag of a stream.
const StreamClose = "</stream:stream>"

// AppendStreamHeader writes <?xml version='1.0'?><stream:stream xmlns='defaultNS'
// xmlns:stream='http://etherx.jabber.org/streams' attrs...> (open tag only). Attributes
// in NSXML are written as xml:..., attributes in other namespaces get a declared prefix.
func AppendStreamHeader(buf []byte, defaultNS string, attrs ...Attr) []byte {
	buf = append(buf, "<?xml version='1.0'?><stream:stream"...)
	if defaultNS != "" {
		buf = append(buf, " xmlns='"...)
		buf = appendEscaped(buf, defaultNS, true)
		buf = append(buf, '\'')
	}
	buf = append(buf, " xmlns:stream='"+NSStream+"'"...)
	buf = appendAttrs(buf, attrs)
	return append(buf, '>')
}

// AppendElement serializes e as a child of a stream whose default namespace is
// defaultNS. It writes xmlns only where an element's namespace differs from the default
// namespace in scope (the stream's at the top); elements in NSStream use the stream:
// prefix every stream header binds (when NSStream is not the default) and elements in
// NSXML the xml: prefix. Attributes in NSXML are written as xml:local, attributes in
// other namespaces get a prefix declared on their element. Text and attribute values
// are escaped; characters XML cannot carry (invalid UTF-8, controls, U+FFFE/U+FFFF)
// become U+FFFD so the output is always well-formed. Attributes named xmlns or with a
// colon in Local (and no Space) are dropped: they would redefine or use prefixes the
// recipient cannot resolve; a prefix in an element's Local is removed (Space names the
// namespace). A nil e or one with an empty Local appends nothing. Names are not
// otherwise validated: they come from decoded input or from code.
func AppendElement(buf []byte, e *Element, defaultNS string) []byte {
	if e == nil {
		return buf
	}
	return appendElement(buf, e, defaultNS)
}

// String serializes e with defaultNS = e.Space, for logs and tests.
func (e *Element) String() string {
	if e == nil {
		return "<nil>"
	}
	return string(AppendElement(nil, e, e.Space))
}

func appendElement(buf []byte, e *Element, scope string) []byte {
	local := e.Local
	if i := strings.LastIndexByte(local, ':'); i >= 0 {
		// A prefix in Local would be unbound at the recipient; Space says it all.
		local = local[i+1:]
	}
	if local == "" {
		return buf
	}
	buf = append(buf, '<')
	prefix := ""
	switch {
	case e.Space == NSXML:
		prefix = "xml:"
	case e.Space == NSStream && scope != NSStream:
		prefix = "stream:"
	}
	buf = append(buf, prefix...)
	buf = append(buf, local...)
	if prefix == "" && e.Space != scope {
		buf = append(buf, " xmlns='"...)
		buf = appendEscaped(buf, e.Space, true)
		buf = append(buf, '\'')
		scope = e.Space
	}
	buf = appendAttrs(buf, e.Attrs)
	if len(e.Nodes) == 0 {
		return append(buf, "/>"...)
	}
	buf = append(buf, '>')
	for _, n := range e.Nodes {
		switch n := n.(type) {
		case *Element:
			if n != nil {
				buf = appendElement(buf, n, scope)
			}
		case CharData:
			buf = appendEscaped(buf, string(n), false)
		}
	}
	buf = append(buf, "</"...)
	buf = append(buf, prefix...)
	buf = append(buf, local...)
	return append(buf, '>')
}

// appendAttrs writes attrs, declaring a prefix for each foreign namespace.
func appendAttrs(buf []byte, attrs []Attr) []byte {
	var declared []string // namespaces that got a prefix on this element, prefix = "ns"+index
	for _, a := range attrs {
		var prefix string
		switch a.Space {
		case "":
			if a.Local == "xmlns" || !validLocal(a.Local) {
				continue
			}
		case NSXML:
			prefix = "xml"
		case NSXMLNS:
			continue
		default:
			idx := -1
			for j, u := range declared {
				if u == a.Space {
					idx = j
				}
			}
			if idx < 0 {
				idx = len(declared)
				declared = append(declared, a.Space)
				buf = append(buf, " xmlns:ns"...)
				buf = strconv.AppendInt(buf, int64(idx), 10)
				buf = append(buf, "='"...)
				buf = appendEscaped(buf, a.Space, true)
				buf = append(buf, '\'')
			}
			prefix = "ns" + strconv.Itoa(idx)
		}
		buf = append(buf, ' ')
		if prefix != "" {
			buf = append(buf, prefix...)
			buf = append(buf, ':')
		}
		buf = append(buf, a.Local...)
		buf = append(buf, "='"...)
		buf = appendEscaped(buf, a.Value, true)
		buf = append(buf, '\'')
	}
	return buf
}

// validLocal reports whether an unprefixed attribute name can be written as is: no
// colon, except the conventional "xml:" prefix which every recipient resolves.
func validLocal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return i == 3 && s[:3] == "xml" && i+1 < len(s)
		}
	}
	return s != ""
}

// escTab holds the escape for ASCII bytes that need one: [0] in text, [1] in attributes.
var escTab = func() (t [2][utf8.RuneSelf]string) {
	for m := 0; m < 2; m++ {
		for c := 0; c < 0x20; c++ {
			t[m][c] = "\uFFFD"
		}
		t[m]['&'], t[m]['<'], t[m]['>'], t[m]['\r'] = "&amp;", "&lt;", "&gt;", "&#xD;"
		t[m]['\t'], t[m]['\n'] = "\t", "\n"
	}
	t[1]['\''], t[1]['"'], t[1]['\t'], t[1]['\n'] = "&apos;", "&quot;", "&#x9;", "&#xA;"
	return
}()

// appendEscaped appends s escaped for text or (attr) a single-quoted attribute value.
func appendEscaped(buf []byte, s string, attr bool) []byte {
	tab := &escTab[0]
	if attr {
		tab = &escTab[1]
	}
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if tab[c] == "" || (tab[c] == "\t" || tab[c] == "\n") {
				i++
				continue
			}
			buf = append(buf, s[last:i]...)
			buf = append(buf, tab[c]...)
			i++
			last = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == 0xFFFE || r == 0xFFFF {
			buf = append(buf, s[last:i]...)
			buf = append(buf, "\uFFFD"...)
			i += size
			last = i
			continue
		}
		i += size
	}
	return append(buf, s[last:]...)
}
