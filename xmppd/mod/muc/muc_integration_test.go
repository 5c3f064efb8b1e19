//go:build integration

package muc_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// TestMUCWithSlixmpp drives a real xmppd with slixmpp's XEP-0045 plugin: three
// users join a room, exchange groupchat messages, one is kicked; the room, its
// configuration and affiliations survive an xmppd restart on the same data.
func TestMUCWithSlixmpp(t *testing.T) {
	testenv.NeedSlixmpp(t)
	script, err := os.ReadFile("testdata/muc.py")
	if err != nil {
		t.Fatal(err)
	}
	const pw = "muc-secret"
	s := testenv.Start(t, testenv.Options{NoTLSListener: true})
	users := []string{"alice", "bob", "carol"}
	for _, u := range users {
		s.Register(t, u, pw)
	}
	run := func(s *testenv.Server, phase string) {
		t.Helper()
		out := s.RunPython(t, 90*time.Second, string(script), append([]string{phase, s.Host, strconv.Itoa(s.Port), s.Domain, pw}, users...)...)
		if !strings.Contains(out, "OK") {
			t.Fatalf("phase %s:\n%s", phase, out)
		}
	}
	run(s, "create")
	s.Stop()
	s2 := testenv.Start(t, testenv.Options{NoTLSListener: true, Data: s.Data})
	run(s2, "after")
}
