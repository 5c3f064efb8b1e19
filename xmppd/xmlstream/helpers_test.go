package xmlstream

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
)

const testHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>`

// result is everything a decoder made of one input, in comparable form.
type result struct {
	header string
	elems  []string
	err    string // "EOF", "<condition>" for *Error, "read: ..." otherwise
}

func (r result) String() string {
	return fmt.Sprintf("header=%s\nelems=%q\nerr=%s", r.header, r.elems, r.err)
}

func errString(err error) string {
	var xe *Error
	switch {
	case err == io.EOF:
		return "EOF"
	case errors.As(err, &xe):
		return xe.Condition
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected-eof"
	default:
		return "read: " + err.Error()
	}
}

// decodeAll runs a decoder over r until the first error (io.EOF included).
func decodeAll(r io.Reader, lim Limits) (result, []*Element, error) {
	return decodeWith(NewDecoder(r, lim))
}

// decodeWith runs d (fresh or Reset) until the first error (io.EOF included).
func decodeWith(d *Decoder) (result, []*Element, error) {
	var res result
	h, err := d.StreamHeader()
	if err != nil {
		res.err = errString(err)
		return res, nil, err
	}
	res.header = dump(h)
	var els []*Element
	for i := 0; i < 100000; i++ {
		e, err := d.Next()
		if err != nil {
			res.err = errString(err)
			return res, els, err
		}
		els = append(els, e)
		res.elems = append(res.elems, dump(e))
	}
	panic("decodeAll: too many elements")
}

// dump is an unambiguous rendering of an element tree: {space}local[attrs](children).
func dump(e *Element) string {
	var b strings.Builder
	dumpTo(&b, e)
	return b.String()
}

func dumpTo(b *strings.Builder, e *Element) {
	fmt.Fprintf(b, "{%s}%s[", e.Space, e.Local)
	for i, a := range e.Attrs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(b, "{%s}%s=%q", a.Space, a.Local, a.Value)
	}
	b.WriteString("](")
	for i, n := range e.Nodes {
		if i > 0 {
			b.WriteByte(',')
		}
		switch n := n.(type) {
		case *Element:
			dumpTo(b, n)
		case CharData:
			fmt.Fprintf(b, "%q", string(n))
		}
	}
	b.WriteString(")")
}

// chunkReader returns the input in random-sized reads (1..max bytes).
type chunkReader struct {
	s   string
	rng *rand.Rand
	max int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	n := 1 + c.rng.Intn(c.max)
	n = min(n, len(p), len(c.s))
	copy(p, c.s[:n])
	c.s = c.s[n:]
	return n, nil
}

func newRand(seed int64) *rand.Rand { return rand.New(rand.NewSource(seed)) }
