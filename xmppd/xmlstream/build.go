package xmlstream

import (
	"strings"
	"unicode/utf8"
)

// The second pass: build parses one complete, framed element from a single string and
// builds its Element tree. Names, namespace URIs and text without references are
// substrings of that string (one allocation per stanza); Elements, Attrs and Nodes come
// from per-stanza slabs sized by the framer's counts.

// NSXMLNS is the namespace name bound to the xmlns prefix; it can never be declared.
const NSXMLNS = "http://www.w3.org/2000/xmlns/"

type rawAttr struct {
	prefix, local, value string
	decl                 bool // a namespace declaration, not an attribute
}

type openElem struct {
	el       *Element
	qname    string
	nsMark   int
	nodeMark int
}

// build parses b, which the framer found to be one complete element.
func (d *Decoder) build(b []byte) (*Element, *Error) {
	el, err := d.buildTree(string(b))
	// Keep no references into this stanza, and no big scratch buffers. Slots past the
	// length of these slices are kept zero as they shrink, so clearing to len suffices.
	clear(d.nodes)
	clear(d.open)
	clear(d.attrs)
	clear(d.ns[d.nsBase:])
	d.open, d.nodes, d.attrs, d.ns = d.open[:0], d.nodes[:0], d.attrs[:0], d.ns[:d.nsBase]
	if cap(d.text) > 4096 {
		d.text = nil
	}
	if cap(d.nodes) > 1024 {
		d.nodes = nil
	}
	if cap(d.ns) > 256 {
		d.ns = append([]nsBinding(nil), d.ns...)
	}
	return el, err
}

func (d *Decoder) buildTree(s string) (*Element, *Error) {
	// Most stanzas are small: their Elements, Attrs and Nodes share one allocation.
	var elems []Element
	var attrSlab []Attr
	var nodeSlab []Node
	for _, c := range slabClasses {
		if d.nElems <= c.elems && d.nAttrs <= c.attrs {
			elems, attrSlab, nodeSlab = c.alloc()
			elems = elems[:d.nElems]
			break
		}
	}
	if elems == nil {
		elems = make([]Element, d.nElems)
		if d.nAttrs > 0 {
			attrSlab = make([]Attr, 0, d.nAttrs)
		}
	}
	nextElem := 0
	// d.open (the open elements) and d.nodes (their children so far) are scratch
	// reused across stanzas; build resets them.
	// Text not yet added to nodes: pend, or (after several segments, e.g. text and
	// CDATA mixed) the bytes in join.
	var pend string
	var join []byte
	joined := false
	flush := func() {
		if joined {
			pend = string(join)
			joined = false
		}
		if pend != "" {
			d.nodes = append(d.nodes, CharData(pend))
			pend = ""
		}
	}
	addText := func(t string) {
		switch {
		case t == "":
		case joined:
			join = append(join, t...)
		case pend == "":
			pend = t
		default:
			join = append(append(join[:0], pend...), t...)
			joined = true
		}
	}
	i := 0
	for i < len(s) {
		if s[i] != '<' {
			j := strings.IndexByte(s[i:], '<')
			if j < 0 {
				return nil, nwf("unterminated element")
			}
			t, err := d.decodeChars(s[i:i+j], modeText)
			if err != nil {
				return nil, err
			}
			addText(t)
			i += j
			continue
		}
		if i+1 >= len(s) {
			return nil, nwf("unterminated tag")
		}
		switch s[i+1] {
		case '/':
			flush()
			if len(d.open) == 0 {
				return nil, nwf("unexpected end tag")
			}
			top := d.open[len(d.open)-1]
			i += 2
			if !strings.HasPrefix(s[i:], top.qname) {
				return nil, nwf("mismatched end tag")
			}
			i += len(top.qname)
			for i < len(s) && isSpace(s[i]) {
				i++
			}
			if i >= len(s) || s[i] != '>' {
				return nil, nwf("mismatched end tag")
			}
			i++
			if n := len(d.nodes) - top.nodeMark; n > 0 {
				if cap(nodeSlab)-len(nodeSlab) < n {
					nodeSlab = make([]Node, 0, max(n, 2*d.nElems))
				}
				st := len(nodeSlab)
				nodeSlab = append(nodeSlab, d.nodes[top.nodeMark:]...)
				top.el.Nodes = nodeSlab[st:len(nodeSlab):len(nodeSlab)]
				clear(d.nodes[top.nodeMark:])
				d.nodes = d.nodes[:top.nodeMark]
			}
			clear(d.ns[top.nsMark:])
			d.ns = d.ns[:top.nsMark]
			d.open[len(d.open)-1] = openElem{}
			d.open = d.open[:len(d.open)-1]
			if len(d.open) == 0 {
				if i != len(s) {
					return nil, nwf("data after element")
				}
				return top.el, nil
			}
			d.nodes = append(d.nodes, top.el)
		case '!':
			if !strings.HasPrefix(s[i+2:], cdataOpen) {
				return nil, restricted("comment or markup declaration")
			}
			if len(d.open) == 0 {
				return nil, &Error{Condition: CondBadFormat, Text: "character data at stream level"}
			}
			i += 2 + len(cdataOpen)
			j := strings.Index(s[i:], "]]>")
			if j < 0 {
				return nil, nwf("unterminated CDATA section")
			}
			t, err := d.decodeChars(s[i:i+j], modeCDATA)
			if err != nil {
				return nil, err
			}
			addText(t)
			i += j + 3
		case '?':
			return nil, restricted("processing instruction")
		default:
			flush()
			if len(d.open) >= d.lim.MaxDepth {
				return nil, errorf(CondPolicyViolation, "element nesting deeper than %d", d.lim.MaxDepth)
			}
			if len(d.open) == 0 && i != 0 {
				return nil, nwf("data after element")
			}
			qn, prefix, local, empty, ni, err := d.parseTag(s, i)
			if err != nil {
				return nil, err
			}
			i = ni
			var el *Element
			if nextElem < len(elems) {
				el = &elems[nextElem]
				nextElem++
			} else {
				el = new(Element)
			}
			mark := len(d.ns)
			if err := d.resolve(el, prefix, local, &attrSlab); err != nil {
				return nil, err
			}
			if empty {
				clear(d.ns[mark:])
				d.ns = d.ns[:mark]
				if len(d.open) == 0 {
					if i != len(s) {
						return nil, nwf("data after element")
					}
					return el, nil
				}
				d.nodes = append(d.nodes, el)
				continue
			}
			d.open = append(d.open, openElem{el: el, qname: qn, nsMark: mark, nodeMark: len(d.nodes)})
		}
	}
	return nil, nwf("unterminated element")
}

// A slab holds the Elements, Attrs and Nodes of one small stanza in one allocation.
// Nodes that do not fit get a slab of their own (build allocates it when needed).
type slab[E, A, N any] struct {
	e E
	a A
	n N
}

type slabClass struct {
	elems, attrs int
	alloc        func() ([]Element, []Attr, []Node)
}

// slabClasses fit typical stanzas: <presence/>, <r/>; an iq with one child; a message
// with body and a few extensions; presence with caps and status; bigger ones.
var slabClasses = []slabClass{
	{1, 2, func() ([]Element, []Attr, []Node) {
		s := new(slab[[1]Element, [2]Attr, [1]Node])
		return s.e[:], s.a[:0], s.n[:0]
	}},
	{1, 4, func() ([]Element, []Attr, []Node) {
		s := new(slab[[1]Element, [4]Attr, [2]Node])
		return s.e[:], s.a[:0], s.n[:0]
	}},
	{2, 6, func() ([]Element, []Attr, []Node) {
		s := new(slab[[2]Element, [6]Attr, [3]Node])
		return s.e[:], s.a[:0], s.n[:0]
	}},
	{4, 8, func() ([]Element, []Attr, []Node) {
		s := new(slab[[4]Element, [8]Attr, [6]Node])
		return s.e[:], s.a[:0], s.n[:0]
	}},
	{6, 10, func() ([]Element, []Attr, []Node) {
		s := new(slab[[6]Element, [10]Attr, [8]Node])
		return s.e[:], s.a[:0], s.n[:0]
	}},
	{8, 16, func() ([]Element, []Attr, []Node) {
		s := new(slab[[8]Element, [16]Attr, [12]Node])
		return s.e[:], s.a[:0], s.n[:0]
	}},
}

// parseTag parses the start tag at s[i] == '<' and leaves its attributes (values
// decoded) in d.attrs. It returns the raw qualified name, its parts, whether the tag is
// self-closing and the index after the tag.
func (d *Decoder) parseTag(s string, i int) (qn, prefix, local string, empty bool, next int, err *Error) {
	i++
	start := i
	prefix, local, i, err = d.qname(s, i)
	if err != nil {
		return
	}
	qn = s[start:i]
	clear(d.attrs) // keep the slots past len zero (no references into old stanzas)
	d.attrs = d.attrs[:0]
	for {
		sp := i
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) {
			err = nwf("unterminated tag")
			return
		}
		switch s[i] {
		case '>':
			next = i + 1
			return
		case '/':
			if i+1 < len(s) && s[i+1] == '>' {
				empty, next = true, i+2
				return
			}
			err = nwf("'/' inside a tag")
			return
		}
		if i == sp {
			err = nwf("missing whitespace before attribute")
			return
		}
		if len(d.attrs) >= d.lim.MaxAttrs {
			err = errorf(CondPolicyViolation, "more than %d attributes", d.lim.MaxAttrs)
			return
		}
		var a rawAttr
		a.prefix, a.local, i, err = d.qname(s, i)
		if err != nil {
			return
		}
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			err = nwf("attribute without value")
			return
		}
		i++
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) || (s[i] != '"' && s[i] != '\'') {
			err = nwf("unquoted attribute value")
			return
		}
		q := s[i]
		i++
		j := strings.IndexByte(s[i:], q)
		if j < 0 {
			err = nwf("unterminated attribute value")
			return
		}
		if a.value, err = d.decodeChars(s[i:i+j], modeAttr); err != nil {
			return
		}
		i += j + 1
		d.attrs = append(d.attrs, a)
	}
}

// resolve processes the namespace declarations among d.attrs (pushing them onto d.ns)
// and fills el's name and attributes.
func (d *Decoder) resolve(el *Element, prefix, local string, slab *[]Attr) *Error {
	attrs := d.attrs
	nattr := 0
	for x := range attrs {
		a := &attrs[x]
		switch {
		case a.prefix == "" && a.local == "xmlns":
			if a.value == NSXML || a.value == NSXMLNS {
				return nwf("reserved namespace declared as default")
			}
			d.ns = append(d.ns, nsBinding{"", a.value})
			a.decl = true
		case a.prefix == "xmlns":
			switch {
			case a.value == "":
				return nwf("empty namespace name for prefix " + a.local)
			case a.local == "xmlns" || a.value == NSXMLNS:
				return nwf("xmlns prefix or namespace declared")
			case (a.local == "xml") != (a.value == NSXML):
				return nwf("xml prefix bound to another namespace")
			}
			d.ns = append(d.ns, nsBinding{a.local, a.value})
			a.decl = true
		default:
			nattr++
		}
		for y := 0; y < x; y++ {
			if attrs[y].local == a.local && attrs[y].prefix == a.prefix {
				return nwf("duplicate attribute")
			}
		}
	}
	switch prefix {
	case "":
		el.Space, _ = d.lookup("")
	case "xmlns":
		return nwf("element with xmlns prefix")
	default:
		sp, ok := d.lookup(prefix)
		if !ok {
			return nwf("unbound prefix " + prefix)
		}
		el.Space = sp
	}
	el.Local = local
	if nattr == 0 {
		return nil
	}
	st := len(*slab)
	for x := range attrs {
		a := &attrs[x]
		if a.decl {
			continue
		}
		at := Attr{Local: a.local, Value: a.value}
		if a.prefix != "" {
			sp, ok := d.lookup(a.prefix)
			if !ok {
				return nwf("unbound prefix " + a.prefix)
			}
			at.Space = sp
			for _, o := range (*slab)[st:] {
				if o.Local == at.Local && o.Space == at.Space {
					return nwf("duplicate attribute")
				}
			}
		}
		*slab = append(*slab, at)
	}
	el.Attrs = (*slab)[st:len(*slab):len(*slab)]
	return nil
}

// lookup returns the namespace bound to prefix ("" for the default namespace).
func (d *Decoder) lookup(prefix string) (string, bool) {
	for j := len(d.ns) - 1; j >= 0; j-- {
		if d.ns[j].prefix == prefix {
			return d.ns[j].uri, true
		}
	}
	return "", false
}

// qname scans the XML Name at s[i] and splits it as a Namespaces-in-XML QName.
func (d *Decoder) qname(s string, i int) (prefix, local string, next int, err *Error) {
	start, colon := i, -1
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			switch nameTab[c] {
			case 0:
				goto done
			case 2:
				if i == start {
					return "", "", i, nwf("invalid name start character")
				}
				if colon >= 0 && i == colon+1 {
					return "", "", i, nwf("invalid qualified name: local part must start like a name")
				}
			case 3: // ':'
				if colon >= 0 || i == start {
					return "", "", i, nwf("invalid qualified name")
				}
				colon = i
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return "", "", i, errBadUTF8
		}
		if i == start || (colon >= 0 && i == colon+1) {
			if !isNameStartRune(r) {
				return "", "", i, nwf("invalid name start character")
			}
		} else if !isNameRune(r) {
			return "", "", i, nwf("invalid name character")
		}
		i += size
	}
done:
	if i == start {
		return "", "", i, nwf("expected a name")
	}
	if colon == i-1 {
		return "", "", i, nwf("invalid qualified name")
	}
	if colon < 0 {
		local = s[start:i]
	} else {
		prefix, local = s[start:colon], s[colon+1:i]
	}
	if len(prefix) > d.lim.MaxNameLen || len(local) > d.lim.MaxNameLen {
		return "", "", i, errorf(CondPolicyViolation, "name longer than %d bytes", d.lim.MaxNameLen)
	}
	return prefix, local, i, nil
}

// nameTab classifies ASCII bytes: 1 name start, 2 name char only, 3 colon, 0 neither.
var nameTab = func() (t [utf8.RuneSelf]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = 1
		t[c-'a'+'A'] = 1
	}
	t['_'] = 1
	for c := '0'; c <= '9'; c++ {
		t[c] = 2
	}
	t['-'], t['.'] = 2, 2
	t[':'] = 3
	return
}()

// isNameStartRune is XML 1.0 (5th edition) NameStartChar for non-ASCII runes.
func isNameStartRune(r rune) bool {
	switch {
	case r >= 0xC0 && r <= 0xD6, r >= 0xD8 && r <= 0xF6, r >= 0xF8 && r <= 0x2FF,
		r >= 0x370 && r <= 0x37D, r >= 0x37F && r <= 0x1FFF, r >= 0x200C && r <= 0x200D,
		r >= 0x2070 && r <= 0x218F, r >= 0x2C00 && r <= 0x2FEF, r >= 0x3001 && r <= 0xD7FF,
		r >= 0xF900 && r <= 0xFDCF, r >= 0xFDF0 && r <= 0xFFFD, r >= 0x10000 && r <= 0xEFFFF:
		return true
	}
	return false
}

// isNameRune is XML 1.0 (5th edition) NameChar for non-ASCII runes.
func isNameRune(r rune) bool {
	return isNameStartRune(r) || r == 0xB7 || (r >= 0x300 && r <= 0x36F) || (r >= 0x203F && r <= 0x2040)
}

// isCharRune is the XML 1.0 Char production.
func isCharRune(r rune) bool {
	switch {
	case r >= 0x20 && r <= 0xD7FF:
		return true
	case r == 0x9 || r == 0xA || r == 0xD:
		return true
	case r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}

type charMode uint8

const (
	modeText charMode = iota
	modeAttr
	modeCDATA
)

// plainTab marks ASCII bytes that pass through unchanged, per mode.
var plainTab = func() (t [3][utf8.RuneSelf]bool) {
	for m := range t {
		for c := 0x20; c < utf8.RuneSelf; c++ {
			t[m][c] = true
		}
	}
	t[modeText]['\t'], t[modeText]['\n'] = true, true
	t[modeCDATA]['\t'], t[modeCDATA]['\n'] = true, true
	t[modeText]['&'], t[modeText]['<'], t[modeText][']'] = false, false, false
	t[modeAttr]['&'], t[modeAttr]['<'] = false, false
	return
}()

// decodeChars validates character data (text, attribute value or CDATA content),
// expands references, normalizes line ends (and attribute whitespace) and returns the
// result: s itself when nothing changes.
func (d *Decoder) decodeChars(s string, mode charMode) (string, *Error) {
	plain := &plainTab[mode]
	i := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			if c == ']' && mode == modeText && !strings.HasPrefix(s[i:], "]]>") {
				i++
				continue
			}
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return "", errBadUTF8
		}
		if r == 0xFFFE || r == 0xFFFF {
			return "", nwf("character outside the XML Char range")
		}
		i += size
	}
	if i == len(s) {
		return s, nil
	}
	buf := append(d.text[:0], s[:i]...)
	for i < len(s) {
		c := s[i]
		switch {
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return "", errBadUTF8
			}
			if r == 0xFFFE || r == 0xFFFF {
				return "", nwf("character outside the XML Char range")
			}
			buf = append(buf, s[i:i+size]...)
			i += size
		case c == '\r':
			i++
			if i < len(s) && s[i] == '\n' {
				i++
			}
			if mode == modeAttr {
				buf = append(buf, ' ')
			} else {
				buf = append(buf, '\n')
			}
		case c == '\n' || c == '\t':
			if mode == modeAttr {
				c = ' '
			}
			buf = append(buf, c)
			i++
		case c < 0x20:
			return "", nwf("character outside the XML Char range")
		case c == '&' && mode != modeCDATA:
			var err *Error
			buf, i, err = appendRef(buf, s, i)
			if err != nil {
				return "", err
			}
		case c == '<' && mode != modeCDATA:
			return "", nwf("'<' in attribute value")
		case c == ']' && mode == modeText && strings.HasPrefix(s[i:], "]]>"):
			return "", nwf("']]>' in character data")
		default:
			buf = append(buf, c)
			i++
		}
	}
	d.text = buf
	return string(buf), nil
}

// appendRef expands the reference at s[i] == '&'.
func appendRef(buf []byte, s string, i int) ([]byte, int, *Error) {
	semi := strings.IndexByte(s[i+1:], ';')
	if semi < 0 {
		return buf, i, nwf("'&' not starting a reference")
	}
	ref := s[i+1 : i+1+semi]
	i += semi + 2
	switch ref {
	case "lt":
		return append(buf, '<'), i, nil
	case "gt":
		return append(buf, '>'), i, nil
	case "amp":
		return append(buf, '&'), i, nil
	case "apos":
		return append(buf, '\''), i, nil
	case "quot":
		return append(buf, '"'), i, nil
	}
	if len(ref) > 1 && ref[0] == '#' {
		digits, base := ref[1:], rune(10)
		if digits[0] == 'x' {
			digits, base = digits[1:], 16
		}
		if digits == "" {
			return buf, i, nwf("malformed character reference")
		}
		var v rune
		for j := 0; j < len(digits); j++ {
			c := digits[j]
			var n rune
			switch {
			case c >= '0' && c <= '9':
				n = rune(c - '0')
			case base == 16 && c >= 'a' && c <= 'f':
				n = rune(c-'a') + 10
			case base == 16 && c >= 'A' && c <= 'F':
				n = rune(c-'A') + 10
			default:
				return buf, i, nwf("malformed character reference")
			}
			v = v*base + n
			if v > utf8.MaxRune {
				return buf, i, nwf("character reference out of range")
			}
		}
		if !isCharRune(v) {
			return buf, i, nwf("character reference outside the XML Char range")
		}
		return utf8.AppendRune(buf, v), i, nil
	}
	if isName(ref) {
		if len(ref) > 64 {
			ref = ref[:64] + "..."
		}
		return buf, i, restricted("entity reference &" + ref + "; (only the five predefined entities are allowed)")
	}
	return buf, i, nwf("malformed reference")
}

// isName reports whether s is an XML Name.
func isName(s string) bool {
	for i, r := range s {
		if r < utf8.RuneSelf {
			if nameTab[r] == 0 || (i == 0 && nameTab[r] == 2) {
				return false
			}
			continue
		}
		if r == utf8.RuneError || (i == 0 && !isNameStartRune(r)) || !isNameRune(r) {
			return false
		}
	}
	return s != ""
}
