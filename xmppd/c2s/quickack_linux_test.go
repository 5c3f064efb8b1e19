package c2s

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// TestStreamRestartAfterTLSWithNagle: a client that leaves Nagle's algorithm on
// (Erlang's gen_tcp, tsung, many embedded stacks) sends its TLS Finished and then
// the new stream header as two small segments; the header waits until the
// Finished is acknowledged. crypto/tls sends its session tickets in the first
// flight, so the server has nothing to send after the Finished, and a delayed
// ACK (40 ms minimum on Linux) held every such login for 40 ms. The server
// acknowledges at once after the handshake now. The best of five logins must be
// well under the delayed-ACK minimum.
func TestStreamRestartAfterTLSWithNagle(t *testing.T) {
	e := start(t, nil)
	best := time.Hour
	for i := 0; i < 5; i++ {
		r := testenv.Dial(t, e.addr)
		if err := r.Conn.(*net.TCPConn).SetNoDelay(false); err != nil {
			t.Fatal(err)
		}
		r.Open("localhost")
		r.Send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
		r.Expect("<proceed", 10*time.Second)
		tc := tls.Client(r.Conn, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		tc.SetDeadline(time.Time{})
		r.Conn = tc
		t0 := time.Now()
		r.Open("localhost")
		if d := time.Since(t0); d < best {
			best = d
		}
		r.Conn.Close()
	}
	t.Logf("best stream restart after TLS with Nagle on: %v", best)
	if best >= 30*time.Millisecond {
		t.Fatalf("stream restart after TLS took %v at best: the client's Finished waited for a delayed ACK", best)
	}
}
