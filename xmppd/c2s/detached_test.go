package c2s

import (
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
	"xedge/xmppd/jid"
	"xedge/xmppd/router"
)

// A session whose connection drops waits for resumption Detached, with the
// detached flag in its published row (what other nodes' push modules read), and
// is attached again, flag cleared, once resumed.
func TestDetachedWhileWaitingForResumption(t *testing.T) {
	e := start(t, nil)
	bob := e.login(t, "bob", "r")
	bob.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	id := testenv.Attr(bob.Expect("/>", 5*time.Second), "id")
	full := jid.MustParse("bob@localhost/r")
	sess := func() *session { s, _ := e.r.Session(full).(*session); return s }
	flagged := func() bool {
		for _, row := range e.store.Ephemeral(router.SessionTable).Get(full.String()) {
			if strings.Contains(string(row.Value), `"`+FlagDetached+`"`) {
				return true
			}
		}
		return false
	}
	if s := sess(); s == nil || s.Detached() || flagged() {
		t.Fatal("a connected session counts as detached")
	}
	bob.Drop()
	waitFor(t, "the session to be detached", func() bool { s := sess(); return s != nil && s.Detached() && flagged() })

	b2 := testenvDial(t, e)
	b2.Send("<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='0'/>")
	b2.Expect("<resumed", 5*time.Second)
	waitFor(t, "the session to be attached", func() bool { s := sess(); return s != nil && !s.Detached() && !flagged() })
}
