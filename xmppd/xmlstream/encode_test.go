package xmlstream

import (
	"io"
	"strings"
	"testing"
)

func TestAppendElement(t *testing.T) {
	msg := New(NSClient, "message", "to", "a@b", "type", "chat")
	msg.SetAttrNS(NSXML, "lang", "en")
	msg.Append(New(NSClient, "body").AppendText("1 < 2 & 3 > 2 ]]> 'q' \"d\"\r\n"))
	x := New("urn:xmpp:receipts", "request")
	x.SetAttrNS("urn:other", "a", "v'1\t\n")
	x.SetAttrNS("urn:other", "b", "v2")
	x.SetAttrNS("urn:third", "c", "v3")
	msg.Append(x, New("", "nons"), New(NSStream, "error"))
	cases := []struct {
		e         *Element
		defaultNS string
		want      string
	}{
		{msg, NSClient, `<message to='a@b' type='chat' xml:lang='en'><body>1 &lt; 2 &amp; 3 &gt; 2 ]]&gt; 'q' "d"&#xD;` + "\n" + `</body>` +
			`<request xmlns='urn:xmpp:receipts' xmlns:ns0='urn:other' ns0:a='v&apos;1&#x9;&#xA;' ns0:b='v2' xmlns:ns1='urn:third' ns1:c='v3'/>` +
			`<nons xmlns=''/><stream:error/></message>`},
		{New(NSClient, "presence"), NSServer, `<presence xmlns='jabber:client'/>`},
		{New(NSStream, "features").Append(New("urn:ietf:params:xml:ns:xmpp-tls", "starttls")), NSClient,
			`<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>`},
		// invalid characters never reach the wire
		{New(NSClient, "m", "a", "\x01\xff").AppendText("\x00ok\uFFFE"), NSClient, "<m a='\uFFFD\uFFFD'>\uFFFDok\uFFFD</m>"},
		// attributes that would declare or use unresolvable prefixes are dropped
		{&Element{Space: NSClient, Local: "m", Attrs: []Attr{{Local: "xmlns", Value: "evil"}, {Local: "p:x", Value: "1"}, {Local: "xml:lang", Value: "en"}}}, NSClient, `<m xml:lang='en'/>`},
		// prefixes in element names are removed, nameless elements skipped
		{New(NSClient, "m").Append(New(NSStream, "stream:error"), New("urn:x", "p:y"), New("urn:x", "")), NSClient, `<m><stream:error/><y xmlns='urn:x'/></m>`},
	}
	for _, c := range cases {
		if got := string(AppendElement(nil, c.e, c.defaultNS)); got != c.want {
			t.Errorf("\n got %s\nwant %s", got, c.want)
		}
	}
	if got := New(NSStream, "features").String(); got != `<features/>` {
		t.Errorf("String = %s", got)
	}
	if got := string(AppendElement([]byte("x"), nil, NSClient)); got != "x" {
		t.Errorf("nil element: %q", got)
	}
}

func TestAppendStreamHeader(t *testing.T) {
	got := string(AppendStreamHeader(nil, NSClient, Attr{Local: "from", Value: "example.com"}, Attr{Local: "id", Value: "a'b"},
		Attr{Local: "version", Value: "1.0"}, Attr{Space: NSXML, Local: "lang", Value: "en"}))
	want := `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='a&apos;b' version='1.0' xml:lang='en'>`
	if got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
	d := NewDecoder(strings.NewReader(got+StreamClose), DefaultLimits())
	h, err := d.StreamHeader()
	if err != nil || h.Attr("id") != "a'b" || h.Lang() != "en" || d.DefaultNS() != NSClient {
		t.Fatalf("%v %v", h, err)
	}
	if _, err := d.Next(); err != io.EOF {
		t.Errorf("close: %v", err)
	}
}

// roundTrip encodes els under defaultNS, decodes the result and compares.
func roundTrip(t *testing.T, els []*Element, defaultNS string) {
	t.Helper()
	buf := AppendStreamHeader(nil, defaultNS)
	for _, e := range els {
		buf = AppendElement(buf, e, defaultNS)
	}
	buf = append(buf, StreamClose...)
	res, _, err := decodeAll(strings.NewReader(string(buf)), DefaultLimits())
	if err != io.EOF {
		t.Fatalf("re-decode: %v\n%s", err, buf)
	}
	for i, e := range els {
		if i >= len(res.elems) || res.elems[i] != dump(e) {
			t.Errorf("round trip of element %d:\n got %v\nwant %s\nwire %s", i, res.elems, dump(e), buf)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, in := range chunkCorpus {
		_, els, _ := decodeAll(strings.NewReader(in), DefaultLimits())
		roundTrip(t, els, NSClient)
		roundTrip(t, els, NSServer)
	}
	_, els, err := decodeAll(strings.NewReader(`<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'>`+
		`<db:result from='a' to='b'>k</db:result><m xmlns:p='u' p:a='&#10;&#13;&#9;'><p:x xml:lang='en'/><y xmlns=''/></m>`+StreamClose), DefaultLimits())
	if err != io.EOF {
		t.Fatal(err)
	}
	roundTrip(t, els, NSServer)
}
