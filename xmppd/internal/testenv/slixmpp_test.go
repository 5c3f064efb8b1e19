package testenv

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckSlixmppNamesTheFix(t *testing.T) {
	err := checkSlixmpp(filepath.Join(t.TempDir(), "no-python3"))
	if err == nil || !strings.Contains(err.Error(), "python3-slixmpp") || !strings.Contains(err.Error(), "build/setup.sh") {
		t.Fatalf("missing interpreter: %v", err)
	}
	if err := checkSlixmpp("/bin/false"); err == nil {
		t.Fatal("an interpreter that cannot import slixmpp passed")
	}
}
