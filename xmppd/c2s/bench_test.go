package c2s

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"

	"mellium.im/sasl"
)

// BenchmarkLoginSCRAM measures a full login (STARTTLS, SCRAM-SHA-1, restart, bind,
// presence); the client side (PBKDF2 in mellium's SCRAM client) runs in-process too.
func BenchmarkLoginSCRAM(b *testing.B) {
	e := start(b, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		loginSCRAM(b, e.addr)
	}
}

func loginSCRAM(tb testing.TB, addr string) {
	tb.Helper()
	c := testenv.Dial(tb, addr)
	c.StartTLS("localhost")
	cl := sasl.NewClient(sasl.ScramSha1, sasl.Credentials(func() ([]byte, []byte, []byte) { return []byte("alice"), []byte("secret"), nil }))
	_, first, _ := cl.Step(nil)
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>" + base64.StdEncoding.EncodeToString(first) + "</auth>")
	ch := c.Expect("</challenge>", 5*time.Second)
	ch = ch[strings.Index(ch, ">")+1 : strings.LastIndex(ch, "</challenge>")]
	sf, _ := base64.StdEncoding.DecodeString(ch)
	_, final, _ := cl.Step(sf)
	c.Send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(final) + "</response>")
	c.Expect("<success", 5*time.Second)
	c.Open("localhost")
	c.Bind("")
	c.Send("<presence/>")
	c.Conn.Close()
}
