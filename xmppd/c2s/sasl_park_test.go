package c2s

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"

	"mellium.im/sasl"
)

// A client slower than ParkAfter between the SCRAM challenge and its response
// (a loaded client during a login wave) still authenticates: the stream must
// not park with the poller in the middle of the exchange, which lost the SASL
// state and answered the response with "authenticate first".
func TestSlowSCRAMResponseAcrossPark(t *testing.T) {
	e := start(t, func(c *Config) { c.ParkAfter = 20 * time.Millisecond })
	for _, m := range []sasl.Mechanism{sasl.ScramSha1, sasl.ScramSha256} {
		c := testenv.Dial(t, e.addr)
		c.StartTLS("localhost")
		cl := sasl.NewClient(m, sasl.Credentials(func() ([]byte, []byte, []byte) { return []byte("alice"), []byte("secret"), nil }))
		_, first, _ := cl.Step(nil)
		c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + m.Name + "'>" + base64.StdEncoding.EncodeToString(first) + "</auth>")
		ch := c.Expect("</challenge>", 5*time.Second)
		ch = ch[strings.Index(ch, ">")+1 : strings.LastIndex(ch, "</challenge>")]
		sf, _ := base64.StdEncoding.DecodeString(ch)
		_, final, err := cl.Step(sf)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // the slow client: 15 × ParkAfter
		c.Send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(final) + "</response>")
		if got := c.Expect(">", 5*time.Second); !strings.Contains(got, "<success") {
			t.Fatalf("%s after a pause: %s", m.Name, got)
		}
	}
}
