//go:build integration

package push_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

var componentAddrRE = regexp.MustCompile(`listening for components.*addr[=":]+([0-9.]+:[0-9]+)`)

// TestPushWithAppServer runs testdata/push.py against a real xmppd: a slixmpp
// ComponentXMPP is the app server and records the pubsub publishes it receives;
// slixmpp clients enable push, hibernate (XEP-0198) or go offline, and the
// notifications' summary forms are checked; an app server error disables a
// registration; after an xmppd restart the remaining registration still works.
func TestPushWithAppServer(t *testing.T) {
	testenv.NeedSlixmpp(t)
	script, err := os.ReadFile("testdata/push.py")
	if err != nil {
		t.Fatal(err)
	}
	const pw, secret = "secret-pw", "app-s3cret"
	args := []string{"--component", "127.0.0.1:0", "--components", "push.localhost=" + secret, "--log-level", "info"}
	run := func(s *testenv.Server, phase string, steps ...string) {
		t.Helper()
		// The log line comes on stderr, copied apart from the banner on stdout
		// that made Start return: it may lag behind a little.
		var m []string
		for end := time.Now().Add(10 * time.Second); m == nil && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			m = componentAddrRE.FindStringSubmatch(s.Logs())
		}
		if m == nil {
			t.Fatalf("xmppd logs no component listener:\n%s", s.Logs())
		}
		_, port, _ := strings.Cut(m[1], ":")
		began := time.Now()
		out := s.RunPython(t, 70*time.Second, string(script), phase, port, secret, pw, s.Ctlbin, s.Socket)
		t.Logf("phase %s: %.1f s", phase, time.Since(began).Seconds())
		for _, step := range steps {
			if !strings.Contains(out, "ok "+step) {
				t.Fatalf("phase %s: step %s missing:\n%s\n--- xmppd log ---\n%s", phase, step, out, s.Logs())
			}
		}
	}
	s := testenv.Start(t, testenv.Options{NoTLSListener: true, Args: args})
	s.Register(t, "alice", pw, "bob", pw, "carol", pw)
	run(s, "main", "enabled", "notified-hibernated", "message-count", "notified-offline", "error-disables", "offline-delivered", "disabled")
	if n := strings.Count(s.Logs(), "registration disabled"); n != 1 {
		t.Errorf("want the app server's error logged once as a disabled registration, got %d", n)
	}
	s.Stop()
	s2 := testenv.Start(t, testenv.Options{NoTLSListener: true, Data: s.Data, Args: args})
	run(s2, "restart", "registration-survives-restart")
}
