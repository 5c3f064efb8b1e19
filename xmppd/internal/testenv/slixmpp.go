package testenv

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// NeedSlixmpp fails the test (it does not skip it) when the system python3 cannot
// import slixmpp: build/setup.sh installs python3-slixmpp, so its absence is a
// broken test machine, not a reason to pass quietly.
func NeedSlixmpp(t testing.TB) {
	t.Helper()
	if err := checkSlixmpp(Python); err != nil {
		t.Fatal(err)
	}
}

func checkSlixmpp(python string) error {
	out, err := exec.Command(python, "-c", "import slixmpp").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s cannot import slixmpp (%v: %s): install python3-slixmpp (build/setup.sh test does)",
			python, err, strings.TrimSpace(string(out)))
	}
	return nil
}
