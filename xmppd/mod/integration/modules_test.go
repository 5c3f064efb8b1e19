//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

const (
	password = "secret-pw"
	// offlineCap is the server's --max-offline in these tests.
	offlineCap = 5
)

// TestModules starts one xmppd (through testenv) and runs one slixmpp scenario per
// module behaviour against it, each with fresh accounts.
func TestModules(t *testing.T) {
	testenv.NeedSlixmpp(t)
	_, self, _, _ := runtime.Caller(0)
	script, err := os.ReadFile(filepath.Join(filepath.Dir(self), "testdata", "scenarios.py"))
	if err != nil {
		t.Fatal(err)
	}
	s := testenv.Start(t, testenv.Options{NoTLSListener: true, Args: []string{
		"--max-offline", strconv.Itoa(offlineCap), "--log-level", "info", "--auth-fail-max", "1000"}})
	seq := 0
	users := func(t *testing.T, n int) []string {
		var out []string
		for i := 0; i < n; i++ {
			seq++
			u := fmt.Sprintf("%s%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), seq)
			s.Register(t, u, password)
			out = append(out, u)
		}
		return out
	}
	run := func(t *testing.T, scenario string, args ...string) {
		t.Helper()
		out := s.RunPython(t, 100*time.Second, string(script),
			append([]string{scenario, s.Host, strconv.Itoa(s.Port), s.Domain, password}, args...)...)
		if !strings.Contains(out, "OK") {
			t.Fatalf("scenario %s did not finish:\n%s", scenario, out)
		}
	}
	cases := []struct {
		name, scenario string
		users          int
		extra          []string
	}{
		{"RosterGetSetRemovePush", "roster", 2, nil},
		{"RosterVersioning", "rosterver", 1, nil},
		{"SubscriptionHandshake", "subscription", 2, nil},
		{"PreApproval", "preapproval", 2, nil},
		{"Presence", "presence", 3, nil},
		{"Offline", "offline", 2, []string{strconv.Itoa(offlineCap)}},
		{"Disco", "disco", 1, nil},
		{"Version", "version", 1, nil},
		{"Ping", "ping", 1, nil},
		{"VCard", "vcard", 2, nil},
		{"Private", "private", 1, nil},
		{"Blocking", "blocking", 2, nil},
		{"Carbons", "carbons", 2, nil},
	}
	// Account removal (xmppctl unregister fires EvUserRemoved): nothing survives into a
	// new account of the same name.
	t.Run("AccountRemovalPurges", func(t *testing.T) {
		us := users(t, 2)
		run(t, "removal_fill", us...)
		if o, e, code := s.Ctl("unregister", us[0]); code != 0 {
			t.Fatalf("unregister: %s%s", o, e)
		}
		s.Register(t, us[0], password)
		run(t, "removal_check", us...)
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run(t, c.scenario, append(users(t, c.users), c.extra...)...)
		})
	}
}
