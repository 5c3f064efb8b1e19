package loadgen

import (
	"bytes"
)

// Name returns the qualified name of the element's open tag ("message",
// "stream:features").
func Name(el []byte) []byte {
	if len(el) < 2 || el[0] != '<' {
		return nil
	}
	i := 1
	for i < len(el) {
		switch el[i] {
		case ' ', '\t', '\r', '\n', '/', '>':
			return el[1:i]
		}
		i++
	}
	return el[1:]
}

// Attr returns the value of attribute name in the element's open tag (raw, not
// unescaped), or nil.
func Attr(el []byte, name string) []byte {
	i := len(Name(el)) + 1
	for i < len(el) {
		for i < len(el) && (el[i] == ' ' || el[i] == '\t' || el[i] == '\r' || el[i] == '\n') {
			i++
		}
		if i >= len(el) || el[i] == '>' || el[i] == '/' {
			return nil
		}
		ks := i
		for i < len(el) && el[i] != '=' && el[i] != ' ' && el[i] != '>' {
			i++
		}
		key := el[ks:i]
		for i < len(el) && (el[i] == '=' || el[i] == ' ') {
			i++
		}
		if i >= len(el) || (el[i] != '\'' && el[i] != '"') {
			return nil
		}
		q := el[i]
		i++
		vs := i
		j := bytes.IndexByte(el[i:], q)
		if j < 0 {
			return nil
		}
		i += j
		if string(key) == name {
			return el[vs:i]
		}
		i++
	}
	return nil
}

// Child returns the first descendant element whose local name is local (any
// prefix), as a complete element slice, or nil. It is a plain search: good for
// the stanzas servers send, not a validating parser.
func Child(el []byte, local string) []byte {
	// skip our own open tag
	_, self, ok := tagEnd(el, 0)
	if !ok || self {
		return nil
	}
	p, _, _ := tagEnd(el, 0)
	for p < len(el) {
		k := bytes.IndexByte(el[p:], '<')
		if k < 0 {
			return nil
		}
		p += k
		if p+1 < len(el) && (el[p+1] == '/' || el[p+1] == '!' || el[p+1] == '?') {
			p++
			continue
		}
		n := Name(el[p:])
		if ln := localName(n); string(ln) == local {
			end := elementEnd(el[p:])
			if end < 0 {
				return nil
			}
			return el[p : p+end]
		}
		p++
	}
	return nil
}

// Text returns the character data of a simple element (<a>text</a>) unescaped,
// or "" for an empty or self-closing one.
func Text(el []byte) string {
	j, self, ok := tagEnd(el, 0)
	if !ok || self {
		return ""
	}
	k := bytes.LastIndexByte(el, '<')
	if k < j {
		return ""
	}
	return Unescape(el[j:k])
}

// Unescape resolves the five predefined entities and numeric references.
func Unescape(b []byte) string {
	if bytes.IndexByte(b, '&') < 0 {
		return string(b)
	}
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] != '&' {
			out = append(out, b[i])
			continue
		}
		j := bytes.IndexByte(b[i:], ';')
		if j < 0 {
			out = append(out, b[i:]...)
			break
		}
		ent := string(b[i+1 : i+j])
		switch ent {
		case "lt":
			out = append(out, '<')
		case "gt":
			out = append(out, '>')
		case "amp":
			out = append(out, '&')
		case "quot":
			out = append(out, '"')
		case "apos":
			out = append(out, '\'')
		default:
			var r rune
			ok := len(ent) > 1 && ent[0] == '#'
			if ok {
				digits, base := ent[1:], int32(10)
				if digits[0] == 'x' {
					digits, base = digits[1:], 16
				}
				for _, c := range digits {
					var d int32
					switch {
					case c >= '0' && c <= '9':
						d = c - '0'
					case base == 16 && c >= 'a' && c <= 'f':
						d = c - 'a' + 10
					case base == 16 && c >= 'A' && c <= 'F':
						d = c - 'A' + 10
					default:
						ok = false
					}
					r = r*base + d
				}
			}
			if !ok {
				out = append(out, b[i:i+j+1]...)
			} else {
				out = append(out, string(r)...)
			}
		}
		i += j
	}
	return string(out)
}

// Escape escapes s for use in character data or attribute values.
func Escape(s string) string {
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '\'':
			b.WriteString("&apos;")
		case '"':
			b.WriteString("&quot;")
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func localName(n []byte) []byte {
	if i := bytes.IndexByte(n, ':'); i >= 0 {
		return n[i+1:]
	}
	return n
}

// elementEnd returns the length of the complete element at the start of b, or -1.
func elementEnd(b []byte) int {
	depth, p := 0, 0
	for p < len(b) {
		k := bytes.IndexByte(b[p:], '<')
		if k < 0 {
			return -1
		}
		p += k
		if p+1 >= len(b) {
			return -1
		}
		switch b[p+1] {
		case '/':
			j := bytes.IndexByte(b[p:], '>')
			if j < 0 {
				return -1
			}
			p += j + 1
			depth--
			if depth == 0 {
				return p
			}
		case '!':
			end, ok := skipSpecial(b[p:])
			if !ok {
				return -1
			}
			p += end
		default:
			j, self, ok := tagEnd(b, p)
			if !ok {
				return -1
			}
			p = j
			if !self {
				depth++
			} else if depth == 0 {
				return p
			}
		}
	}
	return -1
}
