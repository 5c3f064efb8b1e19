package servers

import (
	"strings"
	"testing"
)

func TestProsodyRosterFile(t *testing.T) {
	b, err := prosodyRoster([]string{"f2@localhost", "f1@localhost"})
	if err != nil {
		t.Fatal(err)
	}
	want := "return {\n\t[false] = {\n\t\t[\"version\"] = 1;\n\t\t[\"pending\"] = {};\n\t};\n" +
		"\t[\"f1@localhost\"] = {\n\t\t[\"subscription\"] = \"both\";\n\t\t[\"groups\"] = {};\n\t};\n" +
		"\t[\"f2@localhost\"] = {\n\t\t[\"subscription\"] = \"both\";\n\t\t[\"groups\"] = {};\n\t};\n};\n"
	if string(b) != want {
		t.Errorf("got\n%s\nwant\n%s", b, want)
	}
	if _, err := prosodyRoster([]string{"a\"b@x"}); err == nil || !strings.Contains(err.Error(), "only") {
		t.Errorf("quote in a JID: err = %v", err)
	}
	if got := prosodyEncode("user.name@x"); got != "user%2ename%40x" {
		t.Errorf("encode: %q", got)
	}
}
