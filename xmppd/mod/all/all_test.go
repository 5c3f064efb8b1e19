package all

import (
	"context"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
)

func TestModulesStartOnOneHost(t *testing.T) {
	h := modtest.NewHost("example.org", "alice")
	seen := map[string]bool{}
	for _, m := range Modules(Options{}) {
		if seen[m.Name()] {
			t.Fatalf("duplicate module %s", m.Name())
		}
		seen[m.Name()] = true
		if err := m.Start(context.Background(), h); err != nil {
			t.Fatalf("%s: %v", m.Name(), err)
		}
	}
	for _, n := range []string{"roster", "presence", "offline", "disco", "version", "ping", "carbons", "blocking", "vcard", "private"} {
		if !seen[n] {
			t.Errorf("module %s missing", n)
		}
	}
}
