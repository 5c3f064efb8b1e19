package c2s

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// offlineCounter counts the messages that reach offline storage (EvOffline), by body.
type offlineCounter struct {
	mu  sync.Mutex
	got map[string]int
}

func countOffline(e *env) *offlineCounter {
	o := &offlineCounter{got: map[string]int{}}
	e.r.Hook(module.EvOffline, 0, func(_ context.Context, _ module.Host, d *module.EventData) bool {
		body := d.Stanza.ChildText("", "body")
		if i := strings.IndexByte(body, ' '); i >= 0 {
			body = body[:i]
		}
		o.mu.Lock()
		o.got[body]++
		o.mu.Unlock()
		return true
	})
	return o
}

// missing returns the bodies m1..mn not stored exactly once.
func (o *offlineCounter) missing(n int) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var bad []string
	for i := 1; i <= n; i++ {
		if k := fmt.Sprintf("m%d", i); o.got[k] != 1 {
			bad = append(bad, fmt.Sprintf("%s×%d", k, o.got[k]))
		}
	}
	return bad
}

func (o *offlineCounter) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, c := range o.got {
		n += c
	}
	return n
}

func chatTo(to string, i int, pad string) *xmlstream.Element {
	m := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@localhost/a", "to", to, "type", "chat")
	return m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(fmt.Sprintf("m%d %s", i, pad)))
}

// A resumable session closed with <policy-violation/> for too many
// unacknowledged stanzas stays bound while its stream error is on its way to
// a client that does not read (up to the 5 s close deadline). Stanzas routed
// to it meanwhile were acknowledged to their senders (the bus acknowledges a
// stanza handed to the session) and were dropped: neither sent nor kept with
// the unacknowledged ones (qemu scenario (f): 116 messages lost after such a
// close). They are kept and rerouted with the rest when the session ends.
func TestClosingSessionKeepsLateStanzas(t *testing.T) {
	const max, late = 20, 10
	e := start(t, func(c *Config) { c.SMMaxQueue = max; c.SendQueue = 10000 })
	off := countOffline(e)
	bob := e.login(t, "bob", "desk")
	bob.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	bob.Expect("<enabled", 10*time.Second)
	// bob reads nothing more: with 512 KiB stanzas the socket buffers (bob's
	// pinned small, no autotuning) fill and the writer waits, so the final
	// stream error cannot go out.
	if tc, ok := bob.Conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(64 << 10)
	}
	bobJ := jid.MustParse("bob@localhost/desk")
	sess := e.r.Session(bobJ)
	if sess == nil {
		t.Fatal("bob's session is not bound")
	}
	pad := strings.Repeat("x", 512<<10)
	ctx := context.Background()
	for i := 1; i <= max+1; i++ { // the last one is one too many
		e.r.Route(ctx, chatTo(bobJ.String(), i, pad))
	}
	s := sess.(*session)
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if !closing {
		t.Fatal("the session was not closed for too many unacknowledged stanzas")
	}
	for i := max + 2; i <= max+1+late; i++ {
		e.r.Route(ctx, chatTo(bobJ.String(), i, "late"))
	}
	if e.r.Session(bobJ) != sess {
		t.Fatal("precondition: the session ended before the late stanzas were routed (the writer did not wait)")
	}
	if n := off.count(); n != 0 {
		t.Fatalf("%d messages went offline while the session was still bound", n)
	}
	bob.Conn.Close() // the writer fails, the session ends
	waitFor(t, "bob's session to end", func() bool { return e.r.Session(bobJ) == nil })
	// The unacknowledged stanzas are rerouted in one pass once the session is
	// unbound; a few seconds bound the wait for the rest.
	waitFor(t, "the unacknowledged messages to be rerouted", func() bool { return off.count() >= max+1 })
	for i := 0; i < 200 && off.count() < max+1+late; i++ {
		time.Sleep(25 * time.Millisecond)
	}
	if bad := off.missing(max + 1 + late); len(bad) > 0 {
		t.Fatalf("not stored offline exactly once: %v", bad)
	}
}

// A stanza handed to a session after it was terminated (the router looked it
// up just before the session unbound itself) is routed again, not dropped;
// also after the session was handed over to another node.
func TestSendAfterEndIsRerouted(t *testing.T) {
	for _, how := range []string{"terminate", "handover"} {
		t.Run(how, func(t *testing.T) {
			e := start(t, nil)
			off := countOffline(e)
			bob := e.login(t, "bob", "desk")
			bob.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
			enabled := bob.Expect("/>", 10*time.Second)
			bobJ := jid.MustParse("bob@localhost/desk")
			s, _ := e.r.Session(bobJ).(*session)
			if s == nil {
				t.Fatal("bob's session is not bound")
			}
			switch how {
			case "terminate":
				s.terminate()
			case "handover":
				s.mu.Lock()
				id := s.smID
				s.mu.Unlock()
				if _, err := e.srv.Handover(context.Background(), id, "bob"); err != nil {
					t.Fatalf("handover (enabled %q): %v", enabled, err)
				}
			}
			s.Send(chatTo(bobJ.String(), 1, "late"))
			if bad := off.missing(1); len(bad) > 0 {
				t.Fatalf("a stanza sent to the ended session was not rerouted: %v", bad)
			}
		})
	}
}
