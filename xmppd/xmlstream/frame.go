package xmlstream

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// The framer is the first of two passes: a resumable byte-level state machine that finds
// where a top-level element ends while the input arrives in arbitrary chunks. It keeps
// its state in the Decoder, never rescans bytes it has seen, enforces MaxStanza and
// MaxDepth as soon as they are crossed, and rejects DOCTYPE, comments and PIs at once.
// Everything else (names, attributes, references, characters, namespaces) is checked by
// the second pass (build) over the complete element.

type frameState uint8

const (
	fsText  frameState = iota // character data inside an element
	fsLt                      // after '<'
	fsStart                   // inside a start tag, outside quotes
	fsQuote                   // inside a quoted attribute value
	fsEnd                     // inside an end tag
	fsBang                    // after "<!", matching "[CDATA["
	fsCDATA                   // inside a CDATA section
	fsClose                   // inside the stream's end tag
)

type frameStatus uint8

const (
	frameMore    frameStatus = iota // need more input
	frameElement                    // buf[r:r+k] is one complete element
	frameClose                      // buf[r:r+k] is an end tag at stream level
)

const cdataOpen = "[CDATA["

// tagPlain marks the bytes inside a start tag the framer can skip; the others are
// quotes, '/', '<', '>' and '=' (counted to size the attribute slab).
var tagPlain = func() (t [256]bool) {
	for i := range t {
		t[i] = true
	}
	for _, c := range "\"'/<>=" {
		t[c] = false
	}
	return
}()

// frame continues scanning the element that starts at buf[r].
func (d *Decoder) frame() (frameStatus, *Error) {
	buf := d.buf
	i := d.r + d.k
	st, depth := d.st, d.depth
	limit := d.lim.MaxStanza
	if depth == 0 && (st == fsLt || st == fsClose) {
		// Possibly the stream's end tag, which may be longer than a tiny MaxStanza.
		limit = d.headerLimit()
	}
	end := min(d.w, d.r+limit)
	// State is saved on the non-error returns (errors are sticky: no resumption).
	for i < end {
		switch st {
		case fsText:
			j := bytes.IndexByte(buf[i:end], '<')
			if j < 0 {
				i = end
				continue
			}
			i += j + 1
			st = fsLt
		case fsLt:
			switch buf[i] {
			case '/':
				i++
				if depth == 0 {
					st = fsClose
				} else {
					st = fsEnd
				}
			case '!':
				i++
				st, d.bang = fsBang, 0
			case '?':
				return 0, restricted("processing instruction")
			default:
				if c := buf[i]; c < utf8.RuneSelf && nameTab[c] != 1 && c != ':' {
					return 0, nwf("'<' not followed by a name")
				}
				if depth >= d.lim.MaxDepth {
					return 0, errorf(CondPolicyViolation, "element nesting deeper than %d", d.lim.MaxDepth)
				}
				d.nElems++
				st, d.slash = fsStart, false
				if depth == 0 {
					limit = d.lim.MaxStanza
					end = min(d.w, d.r+limit)
				}
			}
		case fsStart:
			if tagPlain[buf[i]] {
				// Names and spaces: nothing that changes the state.
				i++
				for i < end && tagPlain[buf[i]] {
					i++
				}
				d.slash = false
				continue
			}
			c := buf[i]
			i++
			prevSlash := d.slash
			d.slash = c == '/'
			switch c {
			case '"', '\'':
				st, d.quote = fsQuote, c
			case '=':
				d.nAttrs++
			case '<':
				return 0, nwf("'<' inside a tag")
			case '>':
				st = fsText
				if !prevSlash {
					depth++
				} else if depth == 0 {
					d.st, d.depth, d.k = st, depth, i-d.r
					return frameElement, nil
				}
			}
		case fsQuote:
			j := bytes.IndexByte(buf[i:end], d.quote)
			if j < 0 {
				i = end
				continue
			}
			i += j + 1
			st = fsStart
		case fsEnd, fsClose:
			j := bytes.IndexByte(buf[i:end], '>')
			if j < 0 {
				i = end
				continue
			}
			i += j + 1
			if st == fsClose {
				d.st, d.depth, d.k = st, depth, i-d.r
				return frameClose, nil
			}
			depth--
			st = fsText
			if depth == 0 {
				d.st, d.depth, d.k = st, depth, i-d.r
				return frameElement, nil
			}
		case fsBang:
			c := buf[i]
			i++
			if d.bang == 0 && c == '-' {
				return 0, restricted("comment")
			}
			if d.bang == 0 && c != '[' {
				return 0, restricted("DOCTYPE or markup declaration")
			}
			if c != cdataOpen[d.bang] {
				return 0, nwf("malformed CDATA section")
			}
			d.bang++
			if d.bang == len(cdataOpen) {
				if depth == 0 {
					return 0, &Error{Condition: CondBadFormat, Text: "character data at stream level"}
				}
				st, d.brk = fsCDATA, 0
			}
		case fsCDATA:
			c := buf[i]
			i++
			switch {
			case c == ']':
				if d.brk < 2 {
					d.brk++
				}
			case c == '>' && d.brk == 2:
				st = fsText
			default:
				d.brk = 0
			}
		default:
			return 0, nwf(fmt.Sprintf("internal error: frame state %d", st))
		}
	}
	if i-d.r >= limit {
		return 0, errorf(CondPolicyViolation, "element larger than %d bytes", limit)
	}
	d.st, d.depth, d.k = st, depth, i-d.r
	return frameMore, nil
}
