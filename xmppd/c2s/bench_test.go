package c2s

import (
	"testing"

	"xedge/xmppd/internal/testenv"

	"mellium.im/sasl"
)

// BenchmarkLoginSCRAM measures a full login (STARTTLS, SCRAM-SHA-1, restart, bind,
// presence); the client side (PBKDF2 in mellium's SCRAM client) runs in-process too.
func BenchmarkLoginSCRAM(b *testing.B) {
	e := start(b, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := testenv.Dial(b, e.addr)
		c.StartTLS("localhost")
		authSCRAM(b, c, sasl.ScramSha1, "alice", "secret")
		c.Bind("")
		c.Send("<presence/>")
		c.Conn.Close()
	}
}
