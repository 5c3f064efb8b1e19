package c2s

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
	"xedge/xmppd/jid"
)

// Messages sent one at a time and in bursts, starting right after the recipient
// saw its bind result, arrive complete and in order.
func TestDeliveryKeepsOrder(t *testing.T) {
	e := start(t, nil)
	alice := e.login(t, "alice", "a")
	bob := e.login(t, "bob", "b")
	const n = 300
	go func() {
		for i := 0; i < n; i++ {
			m := fmt.Sprintf("<message to='bob@localhost/b' id='m%d'><body>%d</body></message>", i, i)
			if i%50 < 10 { // a burst in one write
				var sb strings.Builder
				for k := 0; k < 5 && i < n; k++ {
					fmt.Fprintf(&sb, "<message to='bob@localhost/b' id='m%d'><body>%d</body></message>", i, i)
					i++
				}
				i--
				m = sb.String()
			}
			if alice.TrySend(m) != nil {
				return
			}
			if i%7 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for i := 0; i < n; i++ {
		got := bob.Expect("</message>", 10*time.Second)
		if !strings.Contains(got, fmt.Sprintf("id='m%d'", i)) {
			if len(got) > 300 {
				got = got[:300] + "..."
			}
			a, _ := alice.ReadUntil("\x00", time.Second)
			if len(a) > 600 {
				a = a[:600] + "..."
			}
			t.Fatalf("message %d: got %q; alice got %q", i, got, a)
		}
	}
}

// A recipient that does not read does not block the sender's stream, and it is
// disconnected when its queue overflows.
func TestDeliveryToStuckClient(t *testing.T) {
	e := start(t, func(c *Config) { c.SendQueue = 1000 })
	alice := e.login(t, "alice", "a")
	bob := e.login(t, "bob", "stuck")
	_ = bob // never reads again
	body := strings.Repeat("z", 4000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 3000; i++ {
			if alice.TrySend("<message to='bob@localhost/stuck'><body>"+body+"</body></message>") != nil {
				return
			}
			if e.r.Session(jid.MustParse("bob@localhost/stuck")) == nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second): // a hang detector: 12 MB through TLS take seconds at load 30
		t.Fatal("the sender blocked behind a stuck recipient")
	}
	// The overflow closes bob's stream with 5 s for its last bytes
	// (TestCloseDeadlineNotReArmed); waitFor allows 15 s.
	waitFor(t, "the stuck client to be disconnected", func() bool { return e.r.Session(jid.MustParse("bob@localhost/stuck")) == nil })
	alice.Send("<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>")
	alice.Expect("id='alive'", 10*time.Second)
}

// The caps hash in stream features is cached, and follows a newly registered disco
// feature.
func TestCapsVerFollowsDiscoFeatures(t *testing.T) {
	e := start(t, nil)
	v1 := e.srv.capsVer()
	if v1 != e.srv.computeCapsVer() || e.srv.capsVer() != v1 {
		t.Fatalf("cached caps ver %q differs from a fresh one %q", v1, e.srv.computeCapsVer())
	}
	e.r.DiscoFeature("urn:example:new-feature")
	v2 := e.srv.capsVer()
	if v2 == v1 || v2 != e.srv.computeCapsVer() {
		t.Fatalf("caps ver after a new feature: %q (before %q, fresh %q)", v2, v1, e.srv.computeCapsVer())
	}
	c := testenv.Dial(t, e.addr)
	if f := c.StartTLS("localhost"); !strings.Contains(f, "ver='"+v2+"'") {
		t.Fatalf("features %q lack ver %q", f, v2)
	}
}
