package xmlstream

import (
	"errors"
	"io"
	"math/rand"
	"strings"
	"testing"
	"testing/iotest"
)

func TestDecodeStanzas(t *testing.T) {
	in := testHeader + "\n  " +
		`<message to='juliet@example.com/balcony' from='romeo@example.net/orchard' type="chat" id='m1' xml:lang='en'>` +
		`<body>Art thou not Romeo, &amp; a Montague? &lt;3 &#x263A; &#9731;</body>` +
		`<thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread></message>` +
		"\n \t\r\n" +
		`<presence/><iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>` +
		`<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>` +
		`</stream:stream>`
	res, els, err := decodeAll(strings.NewReader(in), DefaultLimits())
	if err != io.EOF {
		t.Fatalf("err = %v, want io.EOF\n%s", err, res)
	}
	want := []string{
		`{jabber:client}message[{}to="juliet@example.com/balcony" {}from="romeo@example.net/orchard" {}type="chat" {}id="m1" {http://www.w3.org/XML/1998/namespace}lang="en"]({jabber:client}body[]("Art thou not Romeo, & a Montague? <3 ☺ ☃"),{jabber:client}thread[]("e0ffe42b28561960c6b12b944a092794b9683a38"))`,
		`{jabber:client}presence[]()`,
		`{jabber:client}iq[{}type="get" {}id="r1"]({jabber:iq:roster}query[]())`,
		`{http://etherx.jabber.org/streams}features[]({urn:ietf:params:xml:ns:xmpp-tls}starttls[]({urn:ietf:params:xml:ns:xmpp-tls}required[]()))`,
	}
	if len(res.elems) != len(want) {
		t.Fatalf("got %d elements, want %d:\n%s", len(res.elems), len(want), res)
	}
	for i := range want {
		if res.elems[i] != want[i] {
			t.Errorf("element %d:\n got %s\nwant %s", i, res.elems[i], want[i])
		}
	}
	if got := res.header; got != `{http://etherx.jabber.org/streams}stream[{}to="example.com" {}version="1.0"]()` {
		t.Errorf("header = %s", got)
	}
	// Accessors work on decoded trees.
	if els[0].Attr("type") != "chat" || els[0].Lang() != "en" || !strings.Contains(els[0].ChildText(NSClient, "body"), "Montague") {
		t.Errorf("accessors: %s", els[0])
	}
}

func TestNamespaces(t *testing.T) {
	hdr := `<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'>`
	cases := []struct{ in, want string }{
		// prefix declared on the stream header stays in scope
		{`<db:result from='a' to='b'>key</db:result>`, `{jabber:server:dialback}result[{}from="a" {}to="b"]("key")`},
		// default namespace redeclared in a child, restored after it
		{`<iq><query xmlns='jabber:iq:roster'><item/></query><x/></iq>`, `{jabber:server}iq[]({jabber:iq:roster}query[]({jabber:iq:roster}item[]()),{jabber:server}x[]())`},
		// prefixed element and attribute, prefix redeclared in a child
		{`<m xmlns:p='u1'><p:a p:x='1' x='2'><p:b xmlns:p='u2' p:y='3'/></p:a><p:c/></m>`,
			`{jabber:server}m[]({u1}a[{u1}x="1" {}x="2"]({u2}b[{u2}y="3"]()),{u1}c[]())`},
		// undeclaring the default namespace
		{`<m><x xmlns=''><y/></x></m>`, `{jabber:server}m[]({}x[]({}y[]()))`},
		// xml:lang needs no declaration; xmlns declarations are not attributes
		{`<m xml:lang='de' xmlns:q='urn:q'><q:z xml:lang='fr'/></m>`, `{jabber:server}m[{http://www.w3.org/XML/1998/namespace}lang="de"]({urn:q}z[{http://www.w3.org/XML/1998/namespace}lang="fr"]())`},
		// stream prefix inside stanzas
		{`<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`,
			`{http://etherx.jabber.org/streams}error[]({urn:ietf:params:xml:ns:xmpp-streams}not-well-formed[]())`},
		// xmlns:xml may be declared if bound to its namespace
		{`<m xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>`, `{jabber:server}m[{http://www.w3.org/XML/1998/namespace}lang="en"]()`},
		// same local name in two namespaces is not a duplicate
		{`<m xmlns:a='u1' xmlns:b='u2' a:x='1' b:x='2'/>`, `{jabber:server}m[{u1}x="1" {u2}x="2"]()`},
	}
	for _, c := range cases {
		res, _, err := decodeAll(strings.NewReader(hdr+c.in+StreamClose), DefaultLimits())
		if err != io.EOF || len(res.elems) != 1 || res.elems[0] != c.want {
			t.Errorf("%s:\n%s\nwant %s", c.in, res, c.want)
		}
	}
	d := NewDecoder(strings.NewReader(hdr), DefaultLimits())
	if _, err := d.StreamHeader(); err != nil || d.DefaultNS() != NSServer {
		t.Errorf("DefaultNS = %q, %v", d.DefaultNS(), err)
	}
}

func TestRejections(t *testing.T) {
	long := strings.Repeat("a", 10)
	cases := []struct {
		name, in, cond string
	}{
		{"doctype", `<!DOCTYPE x [<!ENTITY a "b">]>`, CondRestrictedXML},
		{"entity decl inside", `<m><!ENTITY a "b"></m>`, CondRestrictedXML},
		{"billion laughs", `<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><m>&lol2;</m>`, CondRestrictedXML},
		{"comment top", `<!-- hi -->`, CondRestrictedXML},
		{"comment inside", `<m><!-- hi --></m>`, CondRestrictedXML},
		{"pi top", `<?foo bar?>`, CondRestrictedXML},
		{"pi inside", `<m><?foo bar?></m>`, CondRestrictedXML},
		{"xml decl later", `<m><?xml version='1.0'?></m>`, CondRestrictedXML},
		{"undeclared entity", `<m>&nbsp;</m>`, CondRestrictedXML},
		{"undeclared entity in attr", `<m a='&foo;'/>`, CondRestrictedXML},
		{"bare ampersand", `<m>a & b</m>`, CondNotWellFormed},
		{"unterminated ref", `<m>&amp</m>`, CondNotWellFormed},
		{"bad char ref", `<m>&#xZZ;</m>`, CondNotWellFormed},
		{"char ref NUL", `<m>&#0;</m>`, CondNotWellFormed},
		{"char ref surrogate", `<m>&#xD800;</m>`, CondNotWellFormed},
		{"char ref too big", `<m>&#x110000;</m>`, CondNotWellFormed},
		{"char ref huge", `<m>&#99999999999999999999;</m>`, CondNotWellFormed},
		{"control char", "<m>a\x01b</m>", CondNotWellFormed},
		{"control char attr", "<m a='\x1f'/>", CondNotWellFormed},
		{"U+FFFE", "<m>\uFFFE</m>", CondNotWellFormed},
		{"invalid utf8", "<m>\xff</m>", CondUnsupportedEncoding},
		{"invalid utf8 attr", "<m a='\xc3'/>", CondUnsupportedEncoding},
		{"invalid utf8 name", "<m\xc3/>", CondUnsupportedEncoding},
		{"encoded surrogate", "<m>\xed\xa0\x80</m>", CondUnsupportedEncoding},
		{"unbound prefix element", `<p:m/>`, CondNotWellFormed},
		{"unbound prefix attr", `<m p:a='1'/>`, CondNotWellFormed},
		{"prefix out of scope", `<m><a xmlns:p='u'/><p:b/></m>`, CondNotWellFormed},
		{"duplicate attr", `<m a='1' a='2'/>`, CondNotWellFormed},
		{"duplicate expanded attr", `<m xmlns:p='u' xmlns:q='u' p:a='1' q:a='2'/>`, CondNotWellFormed},
		{"duplicate xmlns", `<m xmlns='a' xmlns='b'/>`, CondNotWellFormed},
		{"mismatched end", `<m><a></b></m>`, CondNotWellFormed},
		{"mismatched end prefix", `<m xmlns:p='u'><p:a></a></m>`, CondNotWellFormed},
		{"end tag longer", `<m></mm>`, CondNotWellFormed},
		{"unquoted attr", `<m a=1/>`, CondNotWellFormed},
		{"attr without value", `<m a/>`, CondNotWellFormed},
		{"lt in attr", `<m a='<'/>`, CondNotWellFormed},
		{"no space between attrs", `<m a='1'b='2'/>`, CondNotWellFormed},
		{"lt in tag", `<m <a/>`, CondNotWellFormed},
		{"cdata end in text", `<m>]]></m>`, CondNotWellFormed},
		{"bad name start", `<1m/>`, CondNotWellFormed},
		{"bad qname", `<a:b:c/>`, CondNotWellFormed},
		{"empty prefix", `<:a/>`, CondNotWellFormed},
		{"empty local", `<a:/>`, CondNotWellFormed},
		{"xmlns prefix element", `<xmlns:a/>`, CondNotWellFormed},
		{"undeclare prefix", `<m xmlns:p=''/>`, CondNotWellFormed},
		{"rebind xml", `<m xmlns:xml='u'/>`, CondNotWellFormed},
		{"bind xml ns", `<m xmlns:x='http://www.w3.org/XML/1998/namespace'/>`, CondNotWellFormed},
		{"declare xmlns", `<m xmlns:xmlns='u'/>`, CondNotWellFormed},
		{"text at stream level", `hello`, CondBadFormat},
		{"cdata at stream level", `<![CDATA[x]]>`, CondBadFormat},
		{"bad cdata", `<m><![CDAT[x]]></m>`, CondNotWellFormed},
		{"stray end tag at stream level", `</message>`, CondNotWellFormed},
		{"slash in tag", `<m / a='1'>`, CondNotWellFormed},
		{"long ok", `<` + long + `/>`, ""},
		{"non-ASCII names ok", "<café ü:x='1' xmlns:ü='u'><a·b̀/></café>", ""},
		{"name starting with U+00B7", "<·a/>", CondNotWellFormed},
		{"name starting with combining mark", "<̀a/>", CondNotWellFormed},
		{"U+00D7 in name", "<a×/>", CondNotWellFormed},
		{"local part starting with U+00B7", "<m xmlns:p='u'><p:·a/></m>", CondNotWellFormed},
		{"non-ASCII undeclared entity", "<m>&café;</m>", CondRestrictedXML},
		{"empty reference", `<m>&;</m>`, CondNotWellFormed},
		{"reference with bad name", `<m>&1a;</m>`, CondNotWellFormed},
	}
	for _, c := range cases {
		res, _, err := decodeAll(strings.NewReader(testHeader+c.in+StreamClose), DefaultLimits())
		if c.cond == "" {
			if err != io.EOF {
				t.Errorf("%s: %s: %v", c.name, c.in, err)
			}
			continue
		}
		var xe *Error
		if !errors.As(err, &xe) || xe.Condition != c.cond {
			t.Errorf("%s: %q: got %v, want %s\n%s", c.name, c.in, err, c.cond, res)
		}
	}
}

func TestHeaderRejections(t *testing.T) {
	const ns = ` xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'`
	cases := []struct {
		name, in, cond string
	}{
		{"ok no decl", `<stream:stream` + ns + `>`, ""},
		{"ok decl", `<?xml version="1.0" encoding="utf-8" standalone='yes'?>` + "\n" + `<stream:stream` + ns + `>`, ""},
		{"ok other prefix", `<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'>`, ""},
		{"ok default stream ns", `<stream xmlns='http://etherx.jabber.org/streams'>`, ""},
		{"encoding latin1", `<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream` + ns + `>`, CondUnsupportedEncoding},
		{"utf16 bom", "\xfe\xff\x00<", CondUnsupportedEncoding},
		{"utf16 no bom", "\x00<\x00s", CondUnsupportedEncoding},
		{"version 1.1", `<?xml version='1.1'?><stream:stream` + ns + `>`, CondNotWellFormed},
		{"decl without version", `<?xml encoding='UTF-8'?><stream:stream` + ns + `>`, CondNotWellFormed},
		{"doctype", `<?xml version='1.0'?><!DOCTYPE stream:stream><stream:stream` + ns + `>`, CondRestrictedXML},
		{"comment", `<!-- x --><stream:stream` + ns + `>`, CondRestrictedXML},
		{"pi", `<?xml-stylesheet href='a'?><stream:stream` + ns + `>`, CondRestrictedXML},
		{"pi after decl", `<?xml version='1.0'?><?foo?><stream:stream` + ns + `>`, CondRestrictedXML},
		{"wrong namespace", `<stream:stream xmlns:stream='jabber:client'>`, CondInvalidNamespace},
		{"undeclared stream prefix", `<stream:stream xmlns='jabber:client'>`, CondInvalidNamespace},
		{"wrong local", `<stream:strem` + ns + `>`, CondInvalidNamespace},
		{"text before", `hello<stream:stream` + ns + `>`, CondNotWellFormed},
		{"bom", "\xef\xbb\xbf<stream:stream" + ns + `>`, CondNotWellFormed},
		{"duplicate attr", `<stream:stream` + ns + ` to='a' to='b'>`, CondNotWellFormed},
		{"bad ref", `<stream:stream` + ns + ` to='&x;'>`, CondRestrictedXML},
		{"ws before decl", ` <?xml version='1.0'?><stream:stream` + ns + `>`, CondRestrictedXML},
	}
	for _, c := range cases {
		d := NewDecoder(strings.NewReader(c.in), DefaultLimits())
		_, err := d.StreamHeader()
		if c.cond == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		var xe *Error
		if !errors.As(err, &xe) || xe.Condition != c.cond {
			t.Errorf("%s: %q: got %v, want %s", c.name, c.in, err, c.cond)
		}
		if _, err2 := d.Next(); err2 != err {
			t.Errorf("%s: error is not sticky: %v", c.name, err2)
		}
	}
}

// chunkCorpus is decoded whole, byte by byte and in random chunks; all must agree.
var chunkCorpus = []string{
	testHeader + `<message to='a@b'><body>x &amp; y &#x41;<![CDATA[ <z> ]]]]></body></message>  <presence/>` + StreamClose,
	testHeader + `<iq type='set' id='1'><query xmlns='jabber:iq:roster'><item jid='a@b' name="A &apos;B&apos;"><group>G</group></item></query></iq>` + "\r\n" + StreamClose,
	testHeader + "<m a='x\r\ny\tz'>line1\r\nline2\rline3</m>" + StreamClose,
	testHeader + `<m><!-- c --></m>`,
	testHeader + `<m>&bogus;</m>`,
	testHeader + `<m><a></b></m>`,
	testHeader + `<m>` + strings.Repeat("<a>", 40),
	testHeader + `<m>truncated`,
	`<?xml version='1.0' encoding='UTF-16'?>`,
	testHeader + "<m>\xff</m>",
	testHeader + `<message><body>` + strings.Repeat("long text ", 3000) + `</body></message>` + StreamClose,
}

func TestChunkedInputGivesIdenticalResults(t *testing.T) {
	lim := DefaultLimits()
	for i, in := range chunkCorpus {
		whole, _, _ := decodeAll(strings.NewReader(in), lim)
		one, _, _ := decodeAll(iotest.OneByteReader(strings.NewReader(in)), lim)
		if one.String() != whole.String() {
			t.Errorf("input %d byte by byte:\n%s\nwhole:\n%s", i, one, whole)
		}
		half, _, _ := decodeAll(iotest.HalfReader(strings.NewReader(in)), lim)
		if half.String() != whole.String() {
			t.Errorf("input %d half reads:\n%s\nwhole:\n%s", i, half, whole)
		}
		for seed := int64(0); seed < 20; seed++ {
			cr := &chunkReader{s: in, rng: rand.New(rand.NewSource(seed)), max: 1 + int(seed)*7}
			got, _, _ := decodeAll(cr, lim)
			if got.String() != whole.String() {
				t.Errorf("input %d seed %d:\n%s\nwhole:\n%s", i, seed, got, whole)
			}
		}
		// Data arriving together with an error (io.EOF) is handled like separate reads.
		de, _, _ := decodeAll(iotest.DataErrReader(strings.NewReader(in)), lim)
		if de.String() != whole.String() {
			t.Errorf("input %d DataErrReader:\n%s\nwhole:\n%s", i, de, whole)
		}
	}
}

func TestStreamClose(t *testing.T) {
	d := NewDecoder(strings.NewReader(testHeader+"<presence/> \n</stream:stream >trailing garbage"), DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Next(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := d.Next(); err != io.EOF {
			t.Fatalf("Next after close = %v, want io.EOF", err)
		}
	}
	for _, bad := range []string{`</stream>`, `</stream:streamx>`, `</s:stream>`} {
		_, _, err := decodeAll(strings.NewReader(testHeader+bad), DefaultLimits())
		var xe *Error
		if !errors.As(err, &xe) || xe.Condition != CondNotWellFormed {
			t.Errorf("%s: %v", bad, err)
		}
	}
	_, _, err := decodeAll(strings.NewReader(`<s:stream xmlns:s='http://etherx.jabber.org/streams'><s:features/></s:stream>`), DefaultLimits())
	if err != io.EOF {
		t.Errorf("other prefix close: %v", err)
	}
	// Self-closing header: an empty stream.
	_, _, err = decodeAll(strings.NewReader(`<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>`), DefaultLimits())
	if err != io.EOF {
		t.Errorf("empty stream: %v", err)
	}
	// The connection ends without </stream:stream>.
	_, _, err = decodeAll(strings.NewReader(testHeader+"<presence/><mess"), DefaultLimits())
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := NewDecoder(strings.NewReader(testHeader), DefaultLimits()).Next(); err != ErrNoHeader {
		t.Errorf("Next before StreamHeader: %v", err)
	}
}

func TestReset(t *testing.T) {
	first := `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' xmlns:x='urn:x'>` +
		`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><injected/>`
	d := NewDecoder(strings.NewReader(first), DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		t.Fatal(err)
	}
	e, err := d.Next()
	if err != nil || e.Local != "starttls" {
		t.Fatalf("%v %v", e, err)
	}
	if d.Buffered() == 0 {
		t.Errorf("Buffered() = 0 with <injected/> pending")
	}
	second := `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'><x:a/>`
	d.Reset(strings.NewReader(second))
	if d.InputOffset() != 0 {
		t.Errorf("InputOffset after Reset = %d", d.InputOffset())
	}
	h, err := d.StreamHeader()
	if err != nil || h.Local != "stream" || d.DefaultNS() != NSServer {
		t.Fatalf("second header: %v %v %q", h, err, d.DefaultNS())
	}
	// x was declared on the first stream only; <injected/> was discarded.
	if _, err := d.Next(); err == nil || !strings.Contains(err.Error(), "unbound prefix") {
		t.Errorf("prefix from the previous stream still bound: %v", err)
	}
	// Reset also clears a sticky error.
	d.Reset(strings.NewReader(testHeader + `<presence/>` + StreamClose))
	if _, err := d.StreamHeader(); err != nil {
		t.Fatal(err)
	}
	if e, err := d.Next(); err != nil || e.Local != "presence" || e.Space != NSClient {
		t.Fatalf("%v %v", e, err)
	}
}

// timeoutReader returns its parts one per Read, with errTimeout between them.
type timeoutReader struct {
	parts []string
	gap   bool
}

var errTimeout = errors.New("i/o timeout")

func (r *timeoutReader) Read(p []byte) (int, error) {
	if len(r.parts) == 0 {
		return 0, io.EOF
	}
	if r.gap {
		r.gap = false
		return 0, errTimeout
	}
	n := copy(p, r.parts[0])
	r.parts[0] = r.parts[0][n:]
	if r.parts[0] == "" {
		r.parts = r.parts[1:]
		r.gap = true
	}
	return n, nil
}

func TestReadErrorResumesAndInputOffset(t *testing.T) {
	r := &timeoutReader{parts: []string{testHeader, "<message><bo", "dy>hi</body></mess", "age>", " ", "\n", "<presence/>"}}
	d := NewDecoder(r, DefaultLimits())
	var h *Element
	var err error
	for h, err = d.StreamHeader(); errors.Is(err, errTimeout); h, err = d.StreamHeader() {
	}
	if err != nil || h == nil {
		t.Fatal(err)
	}
	var got []string
	var offsets []int64
	for i := 0; i < 20; i++ {
		e, err := d.Next()
		offsets = append(offsets, d.InputOffset())
		if errors.Is(err, errTimeout) {
			continue
		}
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatal(err)
			}
			break
		}
		got = append(got, e.String())
	}
	if strings.Join(got, "") != "<message><body>hi</body></message><presence/>" {
		t.Errorf("got %q", got)
	}
	// The keepalive whitespace advanced InputOffset while no element was returned.
	total := int64(len(testHeader) + len("<message><body>hi</body></message> \n<presence/>"))
	if offsets[len(offsets)-1] != total {
		t.Errorf("final InputOffset = %d, want %d (%v)", offsets[len(offsets)-1], total, offsets)
	}
	seen := map[int64]bool{}
	for _, o := range offsets {
		seen[o] = true
	}
	msgEnd := int64(len(testHeader) + len("<message><body>hi</body></message>"))
	if !seen[msgEnd+1] || !seen[msgEnd+2] {
		t.Errorf("keepalive bytes not visible in InputOffset: %v (message ends at %d)", offsets, msgEnd)
	}
}

// After Next returns, the decoder's scratch space holds no reference into the stanza
// (an idle connection must not pin its last, possibly 256 KiB, stanza).
func TestScratchHoldsNoReferences(t *testing.T) {
	in := testHeader + `<m xmlns:a='u1' xmlns:b='u2' a:x='1' b:y='2' z='3'><c xmlns:d='u3' d:w='4'>t &amp; u</c><e/></m><presence/>`
	d := NewDecoder(strings.NewReader(in), DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := d.Next(); err != nil {
			t.Fatal(err)
		}
		for _, a := range d.attrs[:cap(d.attrs)] {
			if a != (rawAttr{}) {
				t.Errorf("attrs scratch holds %+v", a)
			}
		}
		for _, b := range d.ns[d.nsBase:cap(d.ns)] {
			if b != (nsBinding{}) {
				t.Errorf("namespace scratch holds %+v", b)
			}
		}
		for _, n := range d.nodes[:cap(d.nodes)] {
			if n != nil {
				t.Errorf("nodes scratch holds %v", n)
			}
		}
		for _, o := range d.open[:cap(d.open)] {
			if o != (openElem{}) {
				t.Errorf("open scratch holds %+v", o)
			}
		}
	}
}

func TestElementAPI(t *testing.T) {
	_, els, err := decodeAll(strings.NewReader(testHeader+`<iq type='result' id='1'>x<query xmlns='jabber:iq:roster'><item jid='a@b'/><item jid='c@d'/></query><y/></iq>`+StreamClose), DefaultLimits())
	if err != io.EOF {
		t.Fatal(err)
	}
	iq := els[0]
	if iq.FirstChild().Local != "query" || len(iq.Children()) != 2 || iq.Text() != "x" {
		t.Fatalf("%s", iq)
	}
	q := iq.Child("jabber:iq:roster", "query")
	// Elements from one stanza share slabs: appending to one must not disturb another.
	q.Append(New("jabber:iq:roster", "item", "jid", "e@f"))
	iq.SetAttr("to", "me@here").SetAttr("type", "set").SetAttr("id", "")
	if got := iq.String(); got != `<iq type='set' to='me@here'>x<query xmlns='jabber:iq:roster'><item jid='a@b'/><item jid='c@d'/><item jid='e@f'/></query><y/></iq>` {
		t.Fatalf("after edits: %s", got)
	}
	q.RemoveChildren("jabber:iq:roster", "item")
	c := iq.Copy()
	iq.RemoveChildren("", "y")
	if got := c.String(); got != `<iq type='set' to='me@here'>x<query xmlns='jabber:iq:roster'/><y/></iq>` {
		t.Fatalf("copy: %s", got)
	}
	if iq.ChildText(NSClient, "nope") != "" || iq.Child("", "y") != nil {
		t.Fatalf("%s", iq)
	}
}

// A decoder whose buffer was dropped (e.g. to save memory on an idle stream) gets a
// new one when it needs to read.
func TestDecoderWithoutBuffer(t *testing.T) {
	d := NewDecoder(iotest.OneByteReader(strings.NewReader(testHeader+`<presence/>`+StreamClose)), DefaultLimits())
	d.buf = nil
	if _, err := d.StreamHeader(); err != nil {
		t.Fatal(err)
	}
	if d.r != d.w {
		t.Fatal("one-byte reads left input buffered")
	}
	d.base += int64(d.r)
	d.r, d.w, d.buf = 0, 0, nil
	if e, err := d.Next(); err != nil || e.Local != "presence" {
		t.Fatalf("%v %v", e, err)
	}
}

// ResetElements reads elements as if they followed the header read before: the
// header's default namespace and prefixes apply, a failed element's error and
// namespace bindings do not carry over, and a decoder without a header is Reset.
func TestResetElements(t *testing.T) {
	d := NewDecoder(strings.NewReader(testHeader), DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		t.Fatal(err)
	}
	d.ResetElements(strings.NewReader("<message to='a@example' xmlns:x='urn:x'><x:y/><body>one</body></message>"))
	el, err := d.Next()
	if err != nil || el.Space != NSClient || el.ChildText(NSClient, "body") != "one" || el.Child("urn:x", "y") == nil {
		t.Fatalf("first: %v, %v", el, err)
	}
	d.ResetElements(strings.NewReader("<message xmlns:x='urn:x'><x:y>"))
	if _, err := d.Next(); err == nil {
		t.Fatal("an element cut short decoded")
	}
	d.ResetElements(strings.NewReader("<iq type='get' id='1'><x:q/></iq>"))
	if _, err := d.Next(); err == nil {
		t.Fatal("the prefix x of an earlier element is still bound")
	}
	d.ResetElements(strings.NewReader("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error><presence/>"))
	if el, err := d.Next(); err != nil || el.Space != NSStream || el.Local != "error" {
		t.Fatalf("the header's stream prefix: %v, %v", el, err)
	}
	if el, err := d.Next(); err != nil || el.Local != "presence" || el.Space != NSClient {
		t.Fatalf("second element: %v, %v", el, err)
	}
	fresh := NewDecoder(strings.NewReader(""), DefaultLimits())
	fresh.ResetElements(strings.NewReader("<presence/>"))
	if _, err := fresh.Next(); err != ErrNoHeader {
		t.Fatalf("without a header: %v, want ErrNoHeader", err)
	}
}
