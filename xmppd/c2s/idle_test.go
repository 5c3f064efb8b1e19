package c2s

import (
	"strings"
	"testing"
	"time"
)

// Input arriving in every shape around an idle (parked) stream is read exactly once
// and in order: keepalives, an element split across TLS records, an element larger
// than the decoder's initial buffer, several elements in one record, and input that
// crypto/tls holds behind whitespace the decoder consumed.
func TestIdleParkingReadsEverything(t *testing.T) {
	for _, poll := range []bool{true, false} {
		t.Run(map[bool]string{true: "poller", false: "goroutine"}[poll], func(t *testing.T) {
			e := start(t, func(c *Config) { c.ParkAfter = 10 * time.Millisecond; c.noPoller = !poll })
			idleParkingReadsEverything(t, e)
			if _, parks := e.srv.poller.stats(); poll && e.srv.poller != nil && parks == 0 {
				t.Fatal("no stream was parked with the poller")
			}
		})
	}
}

func idleParkingReadsEverything(t *testing.T, e *env) {
	c := e.login(t, "alice", "r")
	ping := func(id string) string {
		return "<iq type='get' id='" + id + "'><ping xmlns='urn:xmpp:ping'/></iq>"
	}
	expect := func(id string) {
		t.Helper()
		c.Expect("id='"+id+"'", 10*time.Second)
	}
	time.Sleep(50 * time.Millisecond) // let the reader park (ParkAfter 10 ms)
	c.Send(" ")
	c.Send("\n")
	c.Send(ping("k1"))
	expect("k1")

	half := ping("split")
	c.Send(half[:20])
	time.Sleep(20 * time.Millisecond)
	c.Send(half[20:])
	expect("split")

	// Large elements; after 128 KiB crypto/tls's client also stops using small
	// records, which the last case below needs.
	for _, id := range []string{"big1", "big2", "big3", "big4"} {
		c.Send("<message to='alice@localhost/r' id='" + id + "'><body>" + strings.Repeat("x", 40000) + "</body></message>")
		expect(id)
	}

	c.Send(ping("m1") + ping("m2") + ping("m3"))
	expect("m1")
	expect("m2")
	expect("m3")

	// One write (one TLS record) whose second element lies beyond the decoder's
	// first 4 KiB read, behind whitespace it consumes: crypto/tls holds the rest.
	c.Send(ping("w1") + strings.Repeat(" ", 6000) + ping("w2"))
	expect("w1")
	expect("w2")
}

// A parked stream still ends with <connection-timeout/> when the client is idle.
func TestIdleParkingTimeout(t *testing.T) {
	for _, poll := range []bool{true, false} {
		t.Run(map[bool]string{true: "poller", false: "goroutine"}[poll], func(t *testing.T) {
			e := start(t, func(c *Config) {
				c.IdleTimeout = 300 * time.Millisecond
				c.ParkAfter = 10 * time.Millisecond
				c.noPoller = !poll
			})
			c := e.login(t, "alice", "r")
			begin := time.Now()
			got := c.Expect("</stream:stream>", 10*time.Second)
			if !strings.Contains(got, "connection-timeout") {
				t.Fatalf("idle stream ended with %q", got)
			}
			if d := time.Since(begin); d < 100*time.Millisecond {
				t.Fatalf("timed out after %v, want about 300ms", d)
			}
			if _, parks := e.srv.poller.stats(); poll && e.srv.poller != nil && parks == 0 {
				t.Fatal("the stream was not parked with the poller")
			}
		})
	}
}

// Partial input restarts the idle timer: a stanza trickling in slowly across parks
// is not cut off, and the timeout still comes once input stops.
func TestIdleParkingSlowStanza(t *testing.T) {
	// The pieces come 150 ms apart, far inside the idle timeout, so that a loaded
	// machine (CI on 2 cores, -race) cannot make one late: 400 ms was cut once
	// (broken pipe mid-stanza) in a CI rehearsal.
	e := start(t, func(c *Config) { c.IdleTimeout = 1500 * time.Millisecond; c.ParkAfter = 10 * time.Millisecond })
	c := e.login(t, "alice", "r")
	ping := "<iq type='get' id='slow'><ping xmlns='urn:xmpp:ping'/></iq>"
	for i := 0; i < len(ping); i += 10 {
		c.Send(ping[i:min(i+10, len(ping))])
		time.Sleep(150 * time.Millisecond) // each piece parks the stream again
	}
	c.Expect("id='slow'", 10*time.Second)
	got := c.Expect("</stream:stream>", 10*time.Second)
	if !strings.Contains(got, "connection-timeout") {
		t.Fatalf("idle stream ended with %q", got)
	}
}
