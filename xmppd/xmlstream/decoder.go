package xmlstream

import (
	"errors"
	"fmt"
	"io"
)

// Limits bound what one peer can make the decoder hold. A zero or negative field means
// "use the default".
type Limits struct {
	MaxStanza  int // bytes of one top-level element incl. its subtree (and of the stream header); default 256 KiB
	MaxDepth   int // nesting depth inside a stanza (the stanza itself is depth 1); default 32
	MaxAttrs   int // attributes per element, namespace declarations included; default 64
	MaxNameLen int // bytes in a name or prefix; default 1024
}

// Default limits.
const (
	DefaultMaxStanza  = 256 << 10
	DefaultMaxDepth   = 32
	DefaultMaxAttrs   = 64
	DefaultMaxNameLen = 1024
)

// DefaultLimits returns the limits xmppd uses unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{MaxStanza: DefaultMaxStanza, MaxDepth: DefaultMaxDepth, MaxAttrs: DefaultMaxAttrs, MaxNameLen: DefaultMaxNameLen}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxStanza <= 0 {
		l.MaxStanza = d.MaxStanza
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxAttrs <= 0 {
		l.MaxAttrs = d.MaxAttrs
	}
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = d.MaxNameLen
	}
	return l
}

// Stream error conditions (RFC 6120 §4.9.3) the decoder reports.
const (
	CondNotWellFormed       = "not-well-formed"
	CondRestrictedXML       = "restricted-xml"
	CondPolicyViolation     = "policy-violation"
	CondInvalidNamespace    = "invalid-namespace"
	CondBadFormat           = "bad-format"
	CondUnsupportedEncoding = "unsupported-encoding"
)

// Error is a stream-level violation; Condition is the RFC 6120 §4.9.3 stream error
// condition to send, Text a human-readable reason (for logs, and optionally the
// <text/> of the stream error).
type Error struct{ Condition, Text string }

func (e *Error) Error() string { return "xmlstream: " + e.Condition + ": " + e.Text }

func errorf(cond, format string, args ...any) *Error {
	return &Error{Condition: cond, Text: fmt.Sprintf(format, args...)}
}

func nwf(text string) *Error        { return &Error{Condition: CondNotWellFormed, Text: text} }
func restricted(text string) *Error { return &Error{Condition: CondRestrictedXML, Text: text} }

var errBadUTF8 = &Error{Condition: CondUnsupportedEncoding, Text: "invalid UTF-8"}

// ErrNoHeader is returned by Next when StreamHeader has not succeeded on this stream.
var ErrNoHeader = errors.New("xmlstream: Next called before StreamHeader")

const (
	initBufSize    = 4096
	maxReadRetries = 100
)

// Decoder reads one XML stream: StreamHeader once, then Next until io.EOF. It is not
// safe for concurrent use.
type Decoder struct {
	lim Limits
	rd  io.Reader

	buf  []byte // buf[r:w] is unconsumed input
	r, w int
	base int64 // stream offset of buf[0]
	rerr error // read error that arrived together with data, returned by the next fill

	err       error // sticky *Error
	declDone  bool  // the XML declaration (or its absence) has been handled
	gotHeader bool
	closed    bool // </stream:stream> seen (or the header was self-closing)
	defNS     string
	streamQN  string // raw qualified name of the stream element, e.g. "stream:stream"

	// framing state of the element starting at buf[r]; k bytes of it are scanned
	inStanza bool
	k        int
	st       frameState
	depth    int
	quote    byte
	slash    bool
	bang     int
	brk      int
	nElems   int
	nAttrs   int

	// namespace bindings in scope: ns[:nsBase] come from the stream header
	ns     []nsBinding
	nsBase int

	// scratch reused across stanzas
	attrs []rawAttr
	open  []openElem
	nodes []Node
	text  []byte
}

type nsBinding struct{ prefix, uri string }

// NewDecoder returns a decoder reading the stream from r.
func NewDecoder(r io.Reader, lim Limits) *Decoder {
	d := &Decoder{lim: lim.withDefaults()}
	d.Reset(r)
	return d
}

// Reset starts a new stream on r (stream restart after STARTTLS or SASL success),
// keeping buffers; limits stay. Bytes buffered from the previous stream are
// discarded: after STARTTLS they are exactly what a command-injection attack would send
// (plaintext pipelined behind <starttls/>, the CVE-2011-0411 pattern; RFC 6120 §5.4).
// Use Buffered before Reset to detect them.
func (d *Decoder) Reset(r io.Reader) {
	d.rd = r
	if cap(d.buf) == 0 || cap(d.buf) > 4*initBufSize {
		d.buf = make([]byte, initBufSize)
	}
	d.buf = d.buf[:cap(d.buf)]
	d.r, d.w, d.base, d.rerr = 0, 0, 0, nil
	d.declDone = false
	d.err, d.gotHeader, d.closed, d.defNS, d.streamQN = nil, false, false, "", ""
	d.inStanza, d.k = false, 0
	clear(d.ns[:cap(d.ns)])
	d.ns = append(d.ns[:0], nsBinding{"xml", NSXML})
	d.nsBase = len(d.ns)
}

// ResetElements is Reset for a decoder that has read a stream header: it reads
// elements from r as if they came after that header (its namespaces, default
// namespace and name stay), without reading a header again; errors and a
// closed stream are forgotten. mod/mam decodes each stored message this way. A
// decoder that has read no header is Reset.
func (d *Decoder) ResetElements(r io.Reader) {
	if !d.gotHeader {
		d.Reset(r)
		return
	}
	d.rd = r
	if cap(d.buf) == 0 || cap(d.buf) > 4*initBufSize {
		d.buf = make([]byte, initBufSize)
	}
	d.buf = d.buf[:cap(d.buf)]
	d.r, d.w, d.base, d.rerr = 0, 0, 0, nil
	d.err, d.closed = nil, false
	d.inStanza, d.k = false, 0
	clear(d.ns[d.nsBase:cap(d.ns)]) // bindings of an element cut short
	d.ns = d.ns[:d.nsBase]
}

// Buffered returns how many bytes have been read from the underlying reader but not
// yet consumed.
func (d *Decoder) Buffered() int { return d.w - d.r }

// DefaultNS is the default namespace the stream header declared (jabber:client,
// jabber:server, ...), or "" if it declared none.
func (d *Decoder) DefaultNS() string { return d.defNS }

// InputOffset is the number of bytes consumed so far on this stream: everything up to
// the end of the last returned element plus whitespace keepalives and the scanned part
// of an element still arriving. It lets callers detect activity after a read timeout.
func (d *Decoder) InputOffset() int64 { return d.base + int64(d.r+d.k) }

// fail records a violation; every later call returns it again.
func (d *Decoder) fail(e *Error) error {
	d.err = e
	return e
}

// fill reads more input into buf[w:], compacting (and growing up to the stanza limit)
// first. It returns an error only if no byte was read.
func (d *Decoder) fill() error {
	if d.rerr != nil {
		err := d.rerr
		d.rerr = nil
		return err
	}
	if d.r > 0 {
		n := copy(d.buf, d.buf[d.r:d.w])
		d.base += int64(d.r)
		d.w = n
		d.r = 0
	}
	if d.w == len(d.buf) {
		// Double, up to the limit; a decoder without a buffer gets a fresh one.
		n := max(min(2*len(d.buf), d.headerLimit()+64), initBufSize)
		if n <= len(d.buf) {
			// Cannot happen: the framer fails before an element exceeds MaxStanza.
			return fmt.Errorf("xmlstream: internal error: buffer full")
		}
		nb := make([]byte, n)
		copy(nb, d.buf[:d.w])
		d.buf = nb
	} else if len(d.buf) > 4*initBufSize && d.w <= initBufSize/2 {
		// Give back the memory a big stanza needed.
		nb := make([]byte, initBufSize)
		copy(nb, d.buf[:d.w])
		d.buf = nb
	}
	for i := 0; i < maxReadRetries; i++ {
		n, err := d.rd.Read(d.buf[d.w:])
		if n < 0 || n > len(d.buf)-d.w {
			return fmt.Errorf("xmlstream: reader returned invalid count %d", n)
		}
		d.w += n
		if n > 0 {
			d.rerr = err
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// readErr turns a fill error into what the caller sees.
func readErr(err error) error {
	if err == io.EOF {
		return fmt.Errorf("xmlstream: stream ended before </stream:stream>: %w", io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("xmlstream: read: %w", err)
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

// Next returns the next complete top-level element (stanza or nonza) with namespaces
// resolved. Whitespace between top-level elements (keepalives) is consumed silently.
// It returns io.EOF after </stream:stream>, *Error for violations (the stream must be
// closed with that condition; every later call returns the same error), and the
// underlying read error wrapped otherwise (io.ErrUnexpectedEOF if the connection
// ended mid-stream). After a read error such as a deadline, Next may be called again
// and continues where it stopped.
func (d *Decoder) Next() (*Element, error) {
	if d.err != nil {
		return nil, d.err
	}
	if !d.gotHeader {
		return nil, ErrNoHeader
	}
	if d.closed {
		return nil, io.EOF
	}
	for {
		if !d.inStanza {
			for d.r < d.w && isSpace(d.buf[d.r]) {
				d.r++
			}
			if d.r == d.w {
				if err := d.fill(); err != nil {
					return nil, readErr(err)
				}
				continue
			}
			if d.buf[d.r] != '<' {
				return nil, d.fail(&Error{Condition: CondBadFormat, Text: "character data at stream level"})
			}
			d.inStanza, d.k, d.st, d.depth, d.nElems, d.nAttrs = true, 1, fsLt, 0, 0, 0
		}
		status, ferr := d.frame()
		if ferr != nil {
			return nil, d.fail(ferr)
		}
		switch status {
		case frameMore:
			if err := d.fill(); err != nil {
				return nil, readErr(err)
			}
		case frameElement:
			el, perr := d.build(d.buf[d.r : d.r+d.k])
			d.r += d.k
			d.k, d.inStanza = 0, false
			if perr != nil {
				return nil, d.fail(perr)
			}
			return el, nil
		case frameClose:
			raw := d.buf[d.r : d.r+d.k]
			if !closeTagMatches(raw, d.streamQN) {
				return nil, d.fail(nwf("mismatched end tag at stream level"))
			}
			d.r += d.k
			d.k, d.inStanza, d.closed = 0, false, true
			return nil, io.EOF
		}
	}
}

// closeTagMatches reports whether raw is "</" qn S? ">".
func closeTagMatches(raw []byte, qn string) bool {
	if len(raw) < len(qn)+3 || string(raw[2:2+len(qn)]) != qn {
		return false
	}
	for _, c := range raw[2+len(qn) : len(raw)-1] {
		if !isSpace(c) {
			return false
		}
	}
	return true
}
