package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrStreamClosed is returned by Scanner.Next when the server closed the stream
// (</stream:stream>).
var ErrStreamClosed = errors.New("xmpp stream closed by server")

// MaxStanza bounds one top-level element; a larger one is an error.
const MaxStanza = 1 << 20

// Scanner splits an XMPP stream into its stream header and top-level elements
// without building a tree. It understands what servers send: tags with quoted
// attributes, self-closing tags, text, comments, CDATA and the XML declaration.
// Returned slices stay valid only until the next call to Next.
type Scanner struct {
	r      io.Reader
	buf    []byte
	start  int // first unconsumed byte
	end    int // end of valid data
	inside bool
}

// NewScanner reads from r.
func NewScanner(r io.Reader) *Scanner {
	return &Scanner{r: r, buf: make([]byte, 4096)}
}

// Reset points the scanner at a new reader (after STARTTLS or a stream restart)
// and drops buffered bytes.
func (s *Scanner) Reset(r io.Reader) {
	s.r = r
	s.start, s.end = 0, 0
	s.inside = false
}

// Restart expects a new stream header (after SASL success), keeping buffered bytes.
func (s *Scanner) Restart() { s.inside = false }

// Buffered reports how many unread bytes are buffered.
func (s *Scanner) Buffered() int { return s.end - s.start }

// Next returns the next stream header (the <stream:stream ...> open tag) or
// top-level element, skipping whitespace and the XML declaration between them.
func (s *Scanner) Next() ([]byte, error) {
	for {
		n, emit, err := s.scan(s.buf[s.start:s.end])
		if err != nil {
			return nil, err
		}
		if n > 0 {
			el := s.buf[s.start : s.start+n]
			s.start += n
			if emit {
				return el, nil
			}
			continue
		}
		if err := s.fill(); err != nil {
			return nil, err
		}
	}
}

// fill reads more bytes, compacting or growing the buffer first.
func (s *Scanner) fill() error {
	if s.start > 0 {
		copy(s.buf, s.buf[s.start:s.end])
		s.end -= s.start
		s.start = 0
	}
	if s.end == len(s.buf) {
		if len(s.buf) >= MaxStanza {
			return fmt.Errorf("xmpp element larger than %d bytes", MaxStanza)
		}
		nb := make([]byte, 2*len(s.buf))
		copy(nb, s.buf[:s.end])
		s.buf = nb
	}
	n, err := s.r.Read(s.buf[s.end:])
	s.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// scan looks at b (unconsumed bytes) and reports how many bytes the next complete
// item takes (0: incomplete, read more) and whether to return it (false for
// whitespace, declarations and comments between elements).
func (s *Scanner) scan(b []byte) (int, bool, error) {
	// Skip whitespace / text between top-level elements.
	i := 0
	for i < len(b) && b[i] != '<' {
		i++
	}
	if i > 0 {
		return i, false, nil
	}
	if len(b) < 2 {
		return 0, false, nil
	}
	switch b[1] {
	case '?':
		j := bytes.Index(b, []byte("?>"))
		if j < 0 {
			return 0, false, nil
		}
		return j + 2, false, nil
	case '!':
		end, ok := skipSpecial(b)
		if !ok {
			return 0, false, nil
		}
		return end, false, nil
	case '/':
		j := bytes.IndexByte(b, '>')
		if j < 0 {
			return 0, false, nil
		}
		if s.inside {
			return 0, false, ErrStreamClosed
		}
		return 0, false, fmt.Errorf("unexpected close tag %q", b[:j+1])
	}
	if !s.inside {
		// The stream header: an open tag that stays open.
		j, self, ok := tagEnd(b, 0)
		if !ok {
			return 0, false, nil
		}
		if self {
			return 0, false, errors.New("self-closed stream header")
		}
		s.inside = true
		return j, true, nil
	}
	depth := 0
	p := 0
	for p < len(b) {
		k := bytes.IndexByte(b[p:], '<')
		if k < 0 {
			return 0, false, nil
		}
		p += k
		if p+1 >= len(b) {
			return 0, false, nil
		}
		switch b[p+1] {
		case '/':
			j := bytes.IndexByte(b[p:], '>')
			if j < 0 {
				return 0, false, nil
			}
			p += j + 1
			depth--
			if depth == 0 {
				return p, true, nil
			}
		case '!', '?':
			var end int
			var ok bool
			if b[p+1] == '?' {
				j := bytes.Index(b[p:], []byte("?>"))
				end, ok = j+2, j >= 0
			} else {
				end, ok = skipSpecial(b[p:])
			}
			if !ok {
				return 0, false, nil
			}
			p += end
		default:
			j, self, ok := tagEnd(b, p)
			if !ok {
				return 0, false, nil
			}
			p = j
			if !self {
				depth++
			} else if depth == 0 {
				return p, true, nil
			}
		}
	}
	return 0, false, nil
}

// tagEnd finds the end of the tag starting at b[p] ('<'), honouring quoted
// attribute values. It returns the index just after '>' and whether the tag is
// self-closing.
func tagEnd(b []byte, p int) (int, bool, bool) {
	var quote byte
	for i := p + 1; i < len(b); i++ {
		c := b[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '>':
			return i + 1, b[i-1] == '/', true
		}
	}
	return 0, false, false
}

// skipSpecial handles <!-- --> and <![CDATA[ ]]> starting at b[0].
func skipSpecial(b []byte) (int, bool) {
	var term []byte
	switch {
	case bytes.HasPrefix(b, []byte("<!--")):
		term = []byte("-->")
	case bytes.HasPrefix(b, []byte("<![CDATA[")):
		term = []byte("]]>")
	case len(b) < 9:
		return 0, false
	default:
		term = []byte(">")
	}
	j := bytes.Index(b, term)
	if j < 0 {
		return 0, false
	}
	return j + len(term), true
}
