package xmlstream

import (
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func wantCond(t *testing.T, what string, err error, cond string) {
	t.Helper()
	if cond == "" {
		if err != io.EOF {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	var xe *Error
	if !errors.As(err, &xe) || xe.Condition != cond {
		t.Errorf("%s: %v, want %s", what, err, cond)
	}
}

func TestLimitsAtAndOverBoundary(t *testing.T) {
	// MaxStanza counts the bytes from '<' of the top-level start tag to its final '>'.
	stanza := `<message><body>` + strings.Repeat("x", 1000) + `</body></message>`
	for _, tc := range []struct {
		max  int
		cond string
	}{{len(stanza), ""}, {len(stanza) - 1, CondPolicyViolation}, {len(stanza) + 1, ""}} {
		lim := DefaultLimits()
		lim.MaxStanza = tc.max
		for _, r := range []func() io.Reader{
			func() io.Reader { return strings.NewReader(testHeader + stanza + " " + StreamClose) },
			func() io.Reader {
				return iotest.OneByteReader(strings.NewReader(testHeader + stanza + " " + StreamClose))
			},
		} {
			_, _, err := decodeAll(r(), lim)
			wantCond(t, "MaxStanza="+strconv.Itoa(tc.max), err, tc.cond)
		}
	}
	// A self-closing stanza exactly at the limit.
	lim := DefaultLimits()
	lim.MaxStanza = len(`<presence/>`)
	_, _, err := decodeAll(strings.NewReader(testHeader+`<presence/><presence/>`+StreamClose), lim)
	wantCond(t, "self-closing at limit", err, "")

	nest := func(n int) string {
		return strings.Repeat("<a>", n) + strings.Repeat("</a>", n)
	}
	for _, tc := range []struct {
		depth int
		cond  string
	}{{DefaultMaxDepth, ""}, {DefaultMaxDepth + 1, CondPolicyViolation}} {
		_, _, err := decodeAll(strings.NewReader(testHeader+nest(tc.depth)+StreamClose), DefaultLimits())
		wantCond(t, "depth "+strconv.Itoa(tc.depth), err, tc.cond)
	}
	// Self-closing innermost element counts as a level too.
	_, _, err = decodeAll(strings.NewReader(testHeader+strings.Repeat("<a>", DefaultMaxDepth)+"<b/>"+strings.Repeat("</a>", DefaultMaxDepth)+StreamClose), DefaultLimits())
	wantCond(t, "self-closing one level too deep", err, CondPolicyViolation)

	attrs := func(n int) string {
		var b strings.Builder
		b.WriteString("<m")
		for i := 0; i < n; i++ {
			b.WriteString(" a" + strconv.Itoa(i) + "='v'")
		}
		b.WriteString("/>")
		return b.String()
	}
	for _, tc := range []struct {
		n    int
		cond string
	}{{DefaultMaxAttrs, ""}, {DefaultMaxAttrs + 1, CondPolicyViolation}} {
		_, _, err := decodeAll(strings.NewReader(testHeader+attrs(tc.n)+StreamClose), DefaultLimits())
		wantCond(t, "attrs "+strconv.Itoa(tc.n), err, tc.cond)
	}
	// Namespace declarations count as attributes.
	_, _, err = decodeAll(strings.NewReader(testHeader+strings.Replace(attrs(DefaultMaxAttrs), "<m", "<m xmlns='u'", 1)+StreamClose), DefaultLimits())
	wantCond(t, "attrs incl. xmlns", err, CondPolicyViolation)

	for _, tc := range []struct {
		n    int
		cond string
	}{{DefaultMaxNameLen, ""}, {DefaultMaxNameLen + 1, CondPolicyViolation}} {
		name := strings.Repeat("n", tc.n)
		for what, in := range map[string]string{
			"element": "<" + name + "/>",
			"attr":    "<m " + name + "='1'/>",
			"prefix":  "<" + name + ":m xmlns:" + name + "='u'/>",
			"end tag": "<" + name + "></" + name + ">",
		} {
			_, _, err := decodeAll(strings.NewReader(testHeader+in+StreamClose), DefaultLimits())
			wantCond(t, what+" name "+strconv.Itoa(tc.n), err, tc.cond)
		}
	}
}

// endlessReader yields a prefix and then the same filler forever, counting bytes.
type endlessReader struct {
	prefix string
	filler string
	n      int64
	off    int
}

func (r *endlessReader) Read(p []byte) (int, error) {
	var n int
	if r.prefix != "" {
		n = copy(p, r.prefix)
		r.prefix = r.prefix[n:]
	} else {
		for n < len(p) {
			c := copy(p[n:], r.filler[r.off:])
			n += c
			r.off = (r.off + c) % len(r.filler)
		}
	}
	r.n += int64(n)
	return n, nil
}

func TestUnboundedInputIsCutAtTheLimit(t *testing.T) {
	lim := DefaultLimits()
	for name, tc := range map[string]struct{ prefix, filler string }{
		"huge text":                      {testHeader + "<message><body>", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
		"huge attribute":                 {testHeader + "<message to='", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
		"endless nesting":                {testHeader + "<message>", "<a>"},
		"endless siblings in one stanza": {testHeader + "<message>", "<a/>"},
		"huge header":                    {`<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='`, "cccccccccccccccc"},
		"huge cdata":                     {testHeader + "<message><![CDATA[", "dddddddddddddddd"},
		"huge end tag":                   {testHeader + "<message></message", "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"},
	} {
		r := &endlessReader{prefix: tc.prefix, filler: tc.filler}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := decodeAll(r, lim)
		runtime.ReadMemStats(&after)
		wantCond(t, name, err, CondPolicyViolation)
		// The buffer doubles up to the limit: about 2*MaxStanza in total.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(4*lim.MaxStanza) {
			t.Errorf("%s: allocated %d bytes before failing, limit %d", name, alloc, 4*lim.MaxStanza)
		}
		if limit := int64(len(tc.prefix) + lim.MaxStanza + 2*initBufSize); r.n > limit {
			t.Errorf("%s: read %d bytes before failing, limit %d", name, r.n, limit)
		}
	}
}

func TestZeroLimitsMeanDefaults(t *testing.T) {
	d := NewDecoder(strings.NewReader(""), Limits{})
	if d.lim != DefaultLimits() {
		t.Errorf("limits = %+v", d.lim)
	}
}

// Pathological but legal stanzas at the size limit must still decode in linear
// time. Not an absolute time bound (the machine may be loaded, and -race slows
// everything): each input is decoded at a quarter of the limit and at the limit,
// best of seven each, timed by the decoding thread's CPU clock with the garbage
// collector off (its assists would land on the timed thread). The growth from a
// quarter to the full size is compared with the growth of a plain-text stanza of
// the same sizes measured in the same round, so cache effects of the larger
// input (and a loaded machine's shared caches) count for both. A shape fails
// when it grows more than twice as fast as linear time and the plain-text
// reference predict (quadratic would be 4x or more) in three rounds in a row: a
// real quadratic path fails every round, a noisy neighbour does not.
func TestWorstCaseStanzasAreFast(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	lim := DefaultLimits()
	var decls strings.Builder
	for i := 0; i < DefaultMaxAttrs; i++ {
		decls.WriteString(" xmlns:p" + strconv.Itoa(i) + "='urn:x'")
	}
	deep := strings.Repeat("<a"+decls.String()+">", DefaultMaxDepth-1)
	leafAttrs := ""
	for i := 0; i < DefaultMaxAttrs; i++ {
		leafAttrs += " p0:a" + strconv.Itoa(i) + "=''"
	}
	type shape struct{ prefix, unit, suffix string }
	cases := map[string]shape{
		"text and CDATA alternating": {"<m>", "a<![CDATA[b]]>", "</m>"},
		"many references":            {"<m>", "&amp;&#x41;", "</m>"},
		"many siblings":              {"<m>", "<a/>", "</m>"},
		"deep namespace scopes":      {deep, "<b" + leafAttrs + "/>", strings.Repeat("</a>", DefaultMaxDepth-1)},
	}
	reference := shape{"<m>", "abcdefghijklmnop", "</m>"}
	best := func(name string, c shape, size int) (time.Duration, int) {
		units := (size - len(c.prefix) - len(c.suffix)) / len(c.unit)
		in := testHeader + c.prefix + strings.Repeat(c.unit, units) + c.suffix + StreamClose
		d := time.Duration(math.MaxInt64)
		for i := 0; i < 7; i++ {
			runtime.GC()
			var err error
			d = min(d, threadCPU(func() {
				_, _, err = decodeAll(strings.NewReader(in), lim)
			}))
			wantCond(t, name, err, "")
		}
		return max(d, time.Microsecond), units
	}
	// growth is how much faster than linear a shape's cost grows from a
	// quarter of the limit to the limit (1.0 = exactly linear).
	growth := func(name string, c shape) (float64, string) {
		quarter, qn := best(name, c, lim.MaxStanza/4)
		full, n := best(name, c, lim.MaxStanza)
		linear := float64(n) / float64(qn)
		ratio := float64(full) / float64(quarter)
		return ratio / linear, fmt.Sprintf("%v for %d units, %v for %d units (x%.1f, linear x%.1f)", quarter, qn, full, n, ratio, linear)
	}
	for name, c := range cases {
		var failed []string
		for round := 0; round < 3; round++ {
			ref, refLog := growth("plain text", reference)
			g, log := growth(name, c)
			t.Logf("%s: %s; plain text: %s", name, log, refLog)
			if g <= 2*max(1, ref) {
				failed = nil
				break
			}
			failed = append(failed, fmt.Sprintf("grew %.1fx faster than linear, plain text %.1fx (%s)", g, ref, log))
		}
		if failed != nil {
			t.Errorf("%s: worse than linear in every round: %s", name, strings.Join(failed, "; "))
		}
	}
}
