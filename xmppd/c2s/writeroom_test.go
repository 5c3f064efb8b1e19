package c2s

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/xmlstream"
)

// Stanzas are written in the sender's goroutine while the recipient's socket
// has room (writeOrKickLocked): small stanzas routed to a client that stopped
// reading must still never block the router once its socket is full (they go
// to a writer goroutine), and a client that reads gets everything in order.
func TestInlineWritesNeverBlockOnAStuckClient(t *testing.T) {
	e := start(t, func(c *Config) { c.SendQueue = 100000 })
	bob := e.login(t, "bob", "reader")
	stuck := e.login(t, "alice", "stuck")
	_ = stuck // never reads again
	waitFor(t, "bound", func() bool { return e.r.Count() == 2 })
	ctx := context.Background()
	body := strings.Repeat("z", 1000)
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		// ~20 MB: far beyond what the kernel buffers for one socket.
		for i := 0; i < 20000; i++ {
			m := xmlstream.New(xmlstream.NSClient, "message", "from", "bob@localhost/reader", "to", "alice@localhost/stuck", "type", "chat")
			m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body))
			e.r.Route(ctx, m)
		}
		done <- time.Since(start)
	}()
	select {
	case d := <-done:
		t.Logf("routed 20000 stanzas to a stuck client in %v", d)
	case <-time.After(30 * time.Second): // a hang detector: a blocked write waits for the client forever
		t.Fatal("routing to a client that does not read blocked")
	}
	const n = 500
	go func() {
		for i := 0; i < n; i++ {
			m := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@localhost/stuck", "to", "bob@localhost/reader", "type", "chat", "id", fmt.Sprintf("m%d", i))
			m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(fmt.Sprint(i)))
			e.r.Route(ctx, m)
		}
	}()
	for i := 0; i < n; i++ {
		got := bob.Expect("</message>", 10*time.Second)
		if !strings.Contains(got, fmt.Sprintf("id='m%d'", i)) {
			t.Fatalf("message %d: got %.300q", i, got)
		}
	}
	if e.r.Session(jid.MustParse("alice@localhost/stuck")) == nil {
		t.Fatal("the stuck client was disconnected: its queue was meant to hold everything")
	}
}
