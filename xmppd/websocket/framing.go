// Package websocket is xmppd's XMPP-over-WebSocket endpoint (RFC 7395, the
// "xmpp" subprotocol, mounted on the node's HTTP listener at /xmpp-websocket)
// and the XEP-0156 host-meta documents that point web clients to it.
//
// It owns the translation between WebSocket framing (one text message = one
// element; <open/> and <close/> in urn:ietf:params:xml:ns:xmpp-framing) and
// the plain stream framing the c2s layer speaks (<stream:stream> header and
// </stream:stream>), done in a net.Conn adapter so c2s serves the stream
// unchanged. It must not import c2s, router, server or any module: the caller
// hands it the function that serves a connection.
package websocket

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
)

// Namespaces of RFC 7395 framing and of the stream it stands for.
const (
	NSFraming = "urn:ietf:params:xml:ns:xmpp-framing"
	nsStream  = "http://etherx.jabber.org/streams"
	nsClient  = "jabber:client"
)

// inbound turns one WebSocket message from the client into stream bytes:
// <open/> becomes a stream header, <close/> the closing tag, and anything else
// (one element) passes unchanged. An error means the message is not one
// element of the framing protocol.
func inbound(msg []byte) ([]byte, error) {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || msg[0] != '<' {
		return nil, errors.New("websocket: a message must be one XML element")
	}
	d := xml.NewDecoder(bytes.NewReader(msg))
	var start xml.StartElement
	for {
		tok, err := d.RawToken()
		if err != nil {
			return nil, fmt.Errorf("websocket: bad element: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			start = se
			break
		}
	}
	if start.Name.Space != "" || (start.Name.Local != "open" && start.Name.Local != "close") {
		return msg, nil // a stanza or a nonza: the stream decoder checks it
	}
	var ns string
	for _, a := range start.Attr {
		if a.Name.Space == "" && a.Name.Local == "xmlns" {
			ns = a.Value
		}
	}
	if ns != NSFraming {
		return msg, nil
	}
	if start.Name.Local == "close" {
		return []byte("</stream:stream>"), nil
	}
	var b strings.Builder
	b.WriteString("<stream:stream xmlns='" + nsClient + "' xmlns:stream='" + nsStream + "'")
	writeAttrs(&b, start.Attr)
	b.WriteString(">")
	return []byte(b.String()), nil
}

// writeAttrs writes attrs (raw tokens: prefixes in Name.Space) except
// namespace declarations, single-quoted.
func writeAttrs(b *strings.Builder, attrs []xml.Attr) {
	for _, a := range attrs {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		name := a.Name.Local
		if a.Name.Space != "" {
			name = a.Name.Space + ":" + name
		}
		b.WriteString(" " + name + "='")
		xml.EscapeText(&b2{b}, []byte(a.Value))
		b.WriteString("'")
	}
}

type b2 struct{ b *strings.Builder }

func (w *b2) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\'' {
			w.b.WriteString("&apos;")
		} else {
			w.b.WriteByte(c)
		}
	}
	return len(p), nil
}

// splitter cuts the server's stream bytes into WebSocket messages: the stream
// header becomes <open/>, </stream:stream> becomes <close/>, and each
// top-level element becomes one message with its namespaces declared (RFC 7395
// §3.3.3: jabber:client and the stream prefix, which the stream header
// declared).
type splitter struct {
	buf   []byte // bytes not yet emitted
	pos   int    // next byte of buf to scan
	start int    // start of the current top-level element in buf (-1: none)
	depth int    // 0 outside the stream, 1 inside it, 2+ inside an element
}

func newSplitter() *splitter { return &splitter{start: -1} }

// write adds p and returns the complete messages it made.
func (s *splitter) write(p []byte) ([][]byte, error) {
	s.buf = append(s.buf, p...)
	var out [][]byte
	for {
		i := bytes.IndexByte(s.buf[s.pos:], '<')
		if i < 0 {
			s.pos = len(s.buf)
			break
		}
		tagStart := s.pos + i
		end, ok := tagEnd(s.buf, tagStart)
		if !ok {
			s.pos = tagStart
			break
		}
		tag := s.buf[tagStart:end]
		s.pos = end
		switch {
		case bytes.HasPrefix(tag, []byte("<?")), bytes.HasPrefix(tag, []byte("<!--")):
			// the XML declaration or a comment
		case bytes.HasPrefix(tag, []byte("<![CDATA[")):
		case bytes.HasPrefix(tag, []byte("</")):
			if s.depth == 1 { // </stream:stream>
				out = append(out, []byte("<close xmlns='"+NSFraming+"'/>"))
				s.depth = 0
				break
			}
			s.depth--
			if s.depth == 1 {
				out = append(out, qualify(s.buf[s.start:end]))
				s.start = -1
			}
		case bytes.HasSuffix(tag, []byte("/>")):
			if s.depth == 1 {
				out = append(out, qualify(tag))
			}
		default:
			if s.depth <= 1 && bytes.HasPrefix(tag, []byte("<stream:stream")) {
				// the stream header, also a restarted stream's (after SASL)
				out = append(out, openFromHeader(tag))
				s.depth = 1
				break
			}
			if s.depth == 1 {
				s.start = tagStart
			}
			s.depth++
		}
		if s.depth <= 1 && s.start < 0 {
			// nothing pending before pos: drop what was emitted
			s.buf = append(s.buf[:0], s.buf[s.pos:]...)
			s.pos = 0
		}
	}
	if len(s.buf) > 1<<24 {
		return out, errors.New("websocket: outgoing element too large")
	}
	return out, nil
}

// tagEnd returns the index just after the tag starting at i ('<'), honouring
// quoted attribute values, comments and CDATA sections.
func tagEnd(b []byte, i int) (int, bool) {
	rest := b[i:]
	switch {
	case bytes.HasPrefix(rest, []byte("<!--")):
		j := bytes.Index(rest, []byte("-->"))
		if j < 0 {
			return 0, false
		}
		return i + j + 3, true
	case bytes.HasPrefix(rest, []byte("<![CDATA[")):
		j := bytes.Index(rest, []byte("]]>"))
		if j < 0 {
			return 0, false
		}
		return i + j + 3, true
	case len(rest) < 9 && (bytes.HasPrefix([]byte("<!--"), rest) || bytes.HasPrefix([]byte("<![CDATA["), rest)):
		return 0, false
	}
	var q byte
	for j := i + 1; j < len(b); j++ {
		c := b[j]
		switch {
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '"' || c == '\'':
			q = c
		case c == '>':
			return j + 1, true
		}
	}
	return 0, false
}

// qualify declares the namespaces a top-level element relies on from the
// stream header: xmlns='jabber:client' for an unprefixed element without its
// own, xmlns:stream for stream:features and stream:error.
func qualify(el []byte) []byte {
	end, _ := tagEnd(el, 0)
	first := el[:end]
	nameEnd := 1
	for nameEnd < len(first) && !isSpace(first[nameEnd]) && first[nameEnd] != '>' && first[nameEnd] != '/' {
		nameEnd++
	}
	name := string(first[1:nameEnd])
	var add string
	switch {
	case strings.HasPrefix(name, "stream:"):
		if !bytes.Contains(first, []byte("xmlns:stream=")) {
			add = " xmlns:stream='" + nsStream + "'"
		}
	case !strings.Contains(name, ":"):
		if !hasDefaultNS(first) {
			add = " xmlns='" + nsClient + "'"
		}
	}
	out := make([]byte, 0, len(el)+len(add))
	out = append(out, el[:nameEnd]...)
	out = append(out, add...)
	out = append(out, el[nameEnd:]...)
	return out
}

func hasDefaultNS(tag []byte) bool {
	for i := 0; ; {
		j := bytes.Index(tag[i:], []byte("xmlns="))
		if j < 0 {
			return false
		}
		if k := i + j; k > 0 && isSpace(tag[k-1]) {
			return true
		}
		i += j + 6
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// openFromHeader turns the server's <stream:stream ...> header into <open/>
// with the same from, id, version and xml:lang.
func openFromHeader(tag []byte) []byte {
	var b strings.Builder
	b.WriteString("<open xmlns='" + NSFraming + "'")
	d := xml.NewDecoder(bytes.NewReader(append(append([]byte(nil), tag[:len(tag)-1]...), "/>"...)))
	if tok, err := d.RawToken(); err == nil {
		if se, ok := tok.(xml.StartElement); ok {
			writeAttrs(&b, se.Attr)
		}
	}
	b.WriteString("/>")
	return []byte(b.String())
}
