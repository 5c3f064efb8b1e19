//go:build integration

package pep_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// TestAvatarConversionWithSlixmpp: a PEP avatar published with slixmpp's XEP-0084
// plugin becomes the vCard PHOTO another user reads with the XEP-0054 plugin and
// its hash rides the owner's presence (XEP-0153); a vCard with a PHOTO becomes the
// PEP avatar (XEP-0398).
func TestAvatarConversionWithSlixmpp(t *testing.T) {
	testenv.NeedSlixmpp(t)
	script, err := os.ReadFile("testdata/avatar.py")
	if err != nil {
		t.Fatal(err)
	}
	const pw = "secret-pw"
	s := testenv.Start(t, testenv.Options{NoTLSListener: true, Args: []string{"--log-level", "info"}})
	s.Register(t, "alice", pw, "bob", pw, "carol", pw)
	out := s.RunPython(t, 60*time.Second, string(script), pw)
	for _, step := range []string{"pep-to-vcard ok", "presence-hash ok", "vcard-to-pep ok"} {
		if !strings.Contains(out, step) {
			t.Fatalf("missing %q:\n%s\n--- xmppd log ---\n%s", step, out, s.Logs())
		}
	}
}
