package xmlstream

import (
	"bytes"
	"errors"
	"strings"
)

// headerLimit bounds the XML declaration and the stream header: MaxStanza, but at
// least minHeaderLimit so that a tiny stanza limit still admits a normal header.
func (d *Decoder) headerLimit() int { return max(d.lim.MaxStanza, minHeaderLimit) }

const minHeaderLimit = 4096

// need reads until at least n unconsumed bytes are buffered (n is small).
func (d *Decoder) need(n int) error {
	for d.w-d.r < n {
		if err := d.fill(); err != nil {
			return readErr(err)
		}
	}
	return nil
}

// StreamHeader reads an optional XML declaration and the <stream:stream ...> open tag
// and returns it as an Element (Space NSStream, Local "stream", its attributes such as
// to/from/version/id/xml:lang) without children. The namespaces it declares stay in
// scope for every element of the stream. A self-closing header is an empty stream:
// Next returns io.EOF.
func (d *Decoder) StreamHeader() (*Element, error) {
	if d.err != nil {
		return nil, d.err
	}
	if d.gotHeader {
		return nil, errors.New("xmlstream: StreamHeader called twice on one stream")
	}
	el, err := d.streamHeader()
	if err != nil {
		var xe *Error
		if errors.As(err, &xe) {
			d.fail(xe)
		}
		return nil, err
	}
	return el, nil
}

func (d *Decoder) streamHeader() (*Element, error) {
	if !d.declDone {
		// At the very start: encoding sniffing and the XML declaration.
		if err := d.need(2); err != nil {
			return nil, err
		}
		b0, b1 := d.buf[0], d.buf[1]
		if b0 == 0 || b1 == 0 || b0 == 0xFE || b0 == 0xFF {
			return nil, &Error{Condition: CondUnsupportedEncoding, Text: "stream is not UTF-8"}
		}
		if b0 == '<' && b1 == '?' {
			if err := d.need(6); err != nil {
				return nil, err
			}
			if string(d.buf[:5]) == "<?xml" && isSpace(d.buf[5]) {
				if err := d.xmlDecl(); err != nil {
					return nil, err
				}
			}
		}
		d.declDone = true
	}
	for {
		for d.r < d.w && isSpace(d.buf[d.r]) {
			d.r++
		}
		if d.r < d.w {
			break
		}
		if err := d.fill(); err != nil {
			return nil, readErr(err)
		}
	}
	if d.buf[d.r] != '<' {
		return nil, nwf("character data before the stream header")
	}
	if err := d.need(2); err != nil {
		return nil, err
	}
	switch d.buf[d.r+1] {
	case '?':
		return nil, restricted("processing instruction")
	case '!':
		return nil, restricted("DOCTYPE, comment or markup declaration")
	case '/':
		return nil, nwf("end tag before the stream header")
	}
	// Scan to the end of the start tag.
	if d.k == 0 {
		d.k = 1
		d.quote = 0
	}
	for {
		i := d.r + d.k
		for ; i < d.w && i-d.r < d.headerLimit(); i++ {
			c := d.buf[i]
			if d.quote != 0 {
				if c == d.quote {
					d.quote = 0
				}
				continue
			}
			switch c {
			case '"', '\'':
				d.quote = c
			case '<':
				return nil, nwf("'<' inside a tag")
			case '>':
				i++
				d.k = i - d.r
				return d.parseHeader()
			}
		}
		d.k = i - d.r
		if d.k >= d.headerLimit() {
			return nil, errorf(CondPolicyViolation, "stream header larger than %d bytes", d.headerLimit())
		}
		if err := d.fill(); err != nil {
			return nil, readErr(err)
		}
	}
}

func (d *Decoder) parseHeader() (*Element, error) {
	s := string(d.buf[d.r : d.r+d.k])
	d.r += d.k
	d.k = 0
	qn, prefix, local, empty, next, perr := d.parseTag(s, 0)
	if perr != nil {
		return nil, perr
	}
	if next != len(s) {
		return nil, nwf("malformed stream header")
	}
	el := &Element{}
	var attrs []Attr
	if prefix != "" {
		// An undeclared stream prefix means the stream namespace is missing.
		found := false
		for _, a := range d.attrs {
			if a.prefix == "xmlns" && a.local == prefix {
				found = true
			}
		}
		if !found && prefix != "xml" {
			return nil, &Error{Condition: CondInvalidNamespace, Text: "stream prefix " + prefix + " is not declared"}
		}
	}
	if err := d.resolve(el, prefix, local, &attrs); err != nil {
		return nil, err
	}
	if el.Space != NSStream || el.Local != "stream" {
		return nil, &Error{Condition: CondInvalidNamespace, Text: "stream element is {" + el.Space + "}" + el.Local}
	}
	el.Space = NSStream
	d.nsBase = len(d.ns)
	d.defNS, _ = d.lookup("")
	d.streamQN = qn
	d.gotHeader = true
	d.closed = empty
	return el, nil
}

// xmlDecl consumes the XML declaration at the start of the buffer.
func (d *Decoder) xmlDecl() error {
	k := 6
	for {
		if j := bytes.Index(d.buf[d.r+k-1:d.w], []byte("?>")); j >= 0 {
			k += j + 1
			break
		}
		k = d.w - d.r
		if k >= d.headerLimit() {
			return errorf(CondPolicyViolation, "XML declaration larger than %d bytes", d.headerLimit())
		}
		d.k = k
		if err := d.fill(); err != nil {
			return readErr(err)
		}
	}
	decl := string(d.buf[d.r+5 : d.r+k-2])
	d.r += k
	d.k = 0
	return parseXMLDecl(decl)
}

// parseXMLDecl checks the pseudo-attributes of an XML declaration:
// version (must be 1.0), encoding (must be UTF-8), standalone (yes or no), in that order.
func parseXMLDecl(s string) error {
	names := []string{"version", "encoding", "standalone"}
	seen, count := 0, 0
	for {
		t := strings.TrimLeft(s, " \t\r\n")
		if t == "" {
			break
		}
		if len(t) == len(s) {
			return nwf("malformed XML declaration")
		}
		eq := strings.IndexByte(t, '=')
		if eq < 0 {
			return nwf("malformed XML declaration")
		}
		name := strings.TrimRight(t[:eq], " \t\r\n")
		t = strings.TrimLeft(t[eq+1:], " \t\r\n")
		if t == "" || (t[0] != '"' && t[0] != '\'') {
			return nwf("malformed XML declaration")
		}
		end := strings.IndexByte(t[1:], t[0])
		if end < 0 {
			return nwf("malformed XML declaration")
		}
		val := t[1 : 1+end]
		s = t[end+2:]
		for seen < len(names) && names[seen] != name {
			seen++
		}
		if seen == len(names) {
			return nwf("malformed XML declaration")
		}
		switch name {
		case "version":
			if val != "1.0" {
				return nwf("XML version " + val + " is not supported")
			}
		case "encoding":
			if !strings.EqualFold(val, "UTF-8") {
				return &Error{Condition: CondUnsupportedEncoding, Text: "encoding " + val + " is not UTF-8"}
			}
		case "standalone":
			if val != "yes" && val != "no" {
				return nwf("malformed XML declaration")
			}
		}
		if count == 0 && name != "version" {
			return nwf("XML declaration without version")
		}
		seen++
		count++
	}
	if count == 0 {
		return nwf("XML declaration without version")
	}
	return nil
}
