//go:build integration

package mam_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// TestMAMSlixmpp starts xmppd and runs testdata/mam.py: two users exchange
// messages, the recipient's copies carry stanza-ids, and the archive queried with
// slixmpp's xep_0313 (with-filter, RSM pages of 3, the last page by an empty
// <before/>) returns exactly those stanzas with the same ids.
func TestMAMSlixmpp(t *testing.T) {
	testenv.NeedSlixmpp(t)
	script, err := os.ReadFile("testdata/mam.py")
	if err != nil {
		t.Fatal(err)
	}
	s := testenv.Start(t, testenv.Options{NoTLSListener: true})
	const pw = "secret-pw"
	users := []string{"mamalice", "mambob", "mamcarol"}
	for _, u := range users {
		s.Register(t, u, pw)
	}
	out := s.RunPython(t, 30*time.Second, string(script),
		append([]string{s.Host, strconv.Itoa(s.Port), s.Domain, pw}, users...)...)
	if !strings.Contains(out, "OK") {
		t.Fatalf("mam scenario failed:\n%s", out)
	}
}
