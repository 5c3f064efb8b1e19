package loadgen

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

const sampleStream = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='localhost' version='1.0' xml:lang='en'>
<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>
 <message to="a@b/c" from='x@y/z' type='chat' id="m'1"><body>1 &lt; 2 &amp;&#65;&#x42;</body><!-- note --><x a='>'/></message>
<presence from='x@y'/><iq type='result' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>u@localhost/r</jid></bind></iq></stream:stream>`

func TestScannerSplitsStream(t *testing.T) {
	for _, r := range []io.Reader{strings.NewReader(sampleStream), iotest.OneByteReader(strings.NewReader(sampleStream))} {
		s := NewScanner(r)
		var names []string
		var els [][]byte
		for {
			el, err := s.Next()
			if errors.Is(err, ErrStreamClosed) {
				break
			}
			if err != nil {
				t.Fatalf("after %v: %v", names, err)
			}
			names = append(names, string(Name(el)))
			els = append(els, append([]byte(nil), el...))
		}
		want := []string{"stream:stream", "stream:features", "message", "presence", "iq"}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Fatalf("names = %v, want %v", names, want)
		}
		// Every top-level element is well-formed XML on its own (encoding/xml as oracle),
		// after declaring the stream prefix.
		for _, el := range els[1:] {
			doc := "<r xmlns:stream='s'>" + string(el) + "</r>"
			d := xml.NewDecoder(strings.NewReader(doc))
			for {
				_, err := d.Token()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("element %q not well-formed: %v", el, err)
				}
			}
		}
		msg := els[2]
		if got := string(Attr(msg, "id")); got != "m'1" {
			t.Errorf("id = %q", got)
		}
		if got := string(Attr(msg, "from")); got != "x@y/z" {
			t.Errorf("from = %q", got)
		}
		if got := Text(Child(msg, "body")); got != "1 < 2 &AB" {
			t.Errorf("body = %q", got)
		}
		if Attr(msg, "nope") != nil {
			t.Error("missing attribute found")
		}
		if got := Text(Child(els[4], "jid")); got != "u@localhost/r" {
			t.Errorf("jid = %q", got)
		}
		if Child(els[1], "starttls") == nil || Child(els[1], "required") == nil {
			t.Error("starttls feature not found")
		}
		if Child(els[3], "x") != nil {
			t.Error("child of self-closing element found")
		}
	}
}

func TestScannerOversize(t *testing.T) {
	big := "<stream:stream>" + "<message>" + strings.Repeat("a", MaxStanza+10) + "</message>"
	s := NewScanner(strings.NewReader(big))
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("oversize element: err = %v", err)
	}
}

func TestScannerTruncated(t *testing.T) {
	s := NewScanner(strings.NewReader("<stream:stream><message><body>x"))
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("truncated: err = %v, want EOF", err)
	}
}

func TestEscapeRoundTrip(t *testing.T) {
	in := `a<b>&'"c`
	if got := Unescape([]byte(Escape(in))); got != in {
		t.Fatalf("round trip = %q", got)
	}
}

func FuzzScanner(f *testing.F) {
	f.Add(sampleStream)
	f.Fuzz(func(t *testing.T, in string) {
		s := NewScanner(strings.NewReader(in))
		for range 1000 {
			el, err := s.Next()
			if err != nil {
				return
			}
			_ = Attr(el, "id")
			_ = Text(Child(el, "body"))
		}
	})
}
