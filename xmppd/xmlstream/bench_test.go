package xmlstream

import (
	"bytes"
	"encoding/xml"
	"io"
	"strconv"
	"strings"
	"testing"
)

// benchStanzas is a typical c2s mix: chat messages with receipts and chat states,
// presence with caps, roster and ping iqs, stream management acks, whitespace keepalives.
var benchStanzas = []string{
	`<message to='juliet@example.com/balcony' from='romeo@example.net/orchard' type='chat' id='msg-%d' xml:lang='en'><body>Art thou not Romeo, and a Montague? Neither, fair saint, if either thee dislike. &lt;3</body><active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/><origin-id xmlns='urn:xmpp:sid:0' id='c8b1ea4e-%d'/></message>`,
	`<presence from='romeo@example.net/orchard' id='p-%d'><show>away</show><status>Wooing Juliet</status><priority>1</priority><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://conversations.im' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/></presence>`,
	`<iq type='get' id='ping-%d' to='example.net'><ping xmlns='urn:xmpp:ping'/></iq>`,
	`<message to='juliet@example.com' type='chat' id='m-%d'><received xmlns='urn:xmpp:receipts' id='msg-41'/></message>`,
	"\n",
	`<iq type='result' id='roster-%d'><query xmlns='jabber:iq:roster' ver='ver14'><item jid='nurse@example.com' name='Nurse' subscription='both'><group>Servants</group></item><item jid='mercutio@example.com' subscription='from'/></query></iq>`,
	`<r xmlns='urn:xmpp:sm:3'/>`,
	`<a xmlns='urn:xmpp:sm:3' h='%d'/>`,
}

func benchStream(n int) (string, int) {
	var b strings.Builder
	b.WriteString(testHeader)
	count := 0
	for i := 0; count < n; i++ {
		s := benchStanzas[i%len(benchStanzas)]
		if s != "\n" {
			count++
		}
		b.WriteString(strings.ReplaceAll(s, "%d", strconv.Itoa(i)))
	}
	b.WriteString(StreamClose)
	return b.String(), count
}

// stdEncode serializes e with encoding/xml's Encoder.
func stdEncode(enc *xml.Encoder, e *Element) error {
	start := xml.StartElement{Name: xml.Name{Space: e.Space, Local: e.Local}}
	for _, a := range e.Attrs {
		start.Attr = append(start.Attr, xml.Attr{Name: xml.Name{Space: a.Space, Local: a.Local}, Value: a.Value})
	}
	if err := enc.EncodeToken(start); err != nil {
		return err
	}
	for _, n := range e.Nodes {
		switch n := n.(type) {
		case *Element:
			if err := stdEncode(enc, n); err != nil {
				return err
			}
		case CharData:
			if err := enc.EncodeToken(xml.CharData(n)); err != nil {
				return err
			}
		}
	}
	return enc.EncodeToken(start.End())
}

// reportPerStanza adds wall and CPU nanoseconds per stanza; CPU time (GC included)
// is the steadier number on a loaded machine.
func reportPerStanza(b *testing.B, n int, cpu0 int64) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/stanza")
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu)/float64(b.N*n), "cpu-ns/stanza")
	}
}

func BenchmarkDecode(b *testing.B) {
	in, n := benchStream(1000)
	benchDecode(b, in, n)
}

// BenchmarkDecodeLarge: in-band bytestream (XEP-0047) data stanzas, 4 KiB of base64
// each: throughput on long text.
func BenchmarkDecodeLarge(b *testing.B) {
	chunk := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MjQy", 4096/40)
	var sb strings.Builder
	sb.WriteString(testHeader)
	const n = 100
	for i := 0; i < n; i++ {
		sb.WriteString(`<iq from='romeo@montague.net/orchard' id='ibb-` + strconv.Itoa(i) + `' to='juliet@capulet.com/balcony' type='set'><data xmlns='http://jabber.org/protocol/ibb' seq='` + strconv.Itoa(i) + `' sid='i781hf64'>`)
		sb.WriteString(chunk)
		sb.WriteString(`</data></iq>`)
	}
	sb.WriteString(StreamClose)
	benchDecode(b, sb.String(), n)
}

func benchDecode(b *testing.B, in string, n int) {
	b.Run("xmlstream", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		cpu0 := processCPU()
		r := strings.NewReader(in)
		d := NewDecoder(r, DefaultLimits())
		for i := 0; i < b.N; i++ {
			r.Reset(in)
			d.Reset(r)
			if _, err := d.StreamHeader(); err != nil {
				b.Fatal(err)
			}
			count := 0
			for {
				_, err := d.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
				count++
			}
			if count != n {
				b.Fatalf("%d stanzas, want %d", count, n)
			}
		}
		reportPerStanza(b, n, cpu0)
	})
	b.Run("encoding_xml", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		cpu0 := processCPU()
		r := strings.NewReader(in)
		for i := 0; i < b.N; i++ {
			r.Reset(in)
			els, _, _, err := stdDecode(r)
			if err != nil || len(els) != n {
				b.Fatalf("%d stanzas, %v", len(els), err)
			}
		}
		reportPerStanza(b, n, cpu0)
	})
}

func BenchmarkEncode(b *testing.B) {
	in, n := benchStream(1000)
	_, els, err := decodeAll(strings.NewReader(in), DefaultLimits())
	if err != io.EOF || len(els) != n {
		b.Fatal(err)
	}
	size := 0
	for _, e := range els {
		size += len(AppendElement(nil, e, NSClient))
	}
	b.Run("xmlstream", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		cpu0 := processCPU()
		var buf []byte
		for i := 0; i < b.N; i++ {
			buf = buf[:0]
			for _, e := range els {
				buf = AppendElement(buf, e, NSClient)
			}
		}
		reportPerStanza(b, n, cpu0)
	})
	b.Run("encoding_xml", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		cpu0 := processCPU()
		var buf bytes.Buffer
		for i := 0; i < b.N; i++ {
			buf.Reset()
			enc := xml.NewEncoder(&buf)
			for _, e := range els {
				if err := stdEncode(enc, e); err != nil {
					b.Fatal(err)
				}
			}
			if err := enc.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		reportPerStanza(b, n, cpu0)
	})
}
