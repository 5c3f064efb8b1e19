package vipfailover

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestErrorCondition(t *testing.T) {
	for el, want := range map[string]string{
		`<message type='error'><body>k1-m2</body><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`:                                                                       "service-unavailable",
		`<message type='error'><body>x</body><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>storage unavailable</text></error></message>`: "resource-constraint (storage unavailable)",
		`<message type='error'><body>x</body></message>`: "?",
	} {
		if got := errorCondition([]byte(el)); got != want {
			t.Errorf("%s: %q, want %q", el, got, want)
		}
	}
	s := newSMClient("", "", "", "", nil)
	s.bounced["a"], s.bounced["b"], s.bounced["c"] = "service-unavailable", "service-unavailable", "gone"
	got := s.bouncedOf([]string{"a", "b", "d"})
	if len(got) != 1 || got["service-unavailable"] != 2 {
		t.Errorf("bouncedOf: %v", got)
	}
}

// logEvidence keeps the lines after t0-2s that say where messages went and
// counts the re-routing lines.
func TestLogEvidence(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 12, 7, 12, 0, 10, 0, time.UTC)
	log := strings.Join([]string{
		"time=2026-12-07T12:00:01.000Z level=WARN msg=old",
		"time=2026-12-07T12:00:09.000Z level=INFO msg=\"stanza not acknowledged by the node of its session: routing it again\"",
		"time=2026-12-07T12:00:09.500Z level=INFO msg=\"offline message not stored\" user=bench@vip.test",
		"time=2026-12-07T12:00:11.000Z level=INFO msg=unrelated",
		"not a log line",
	}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "n1.log"), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	h := &harness{opt: Options{Dir: dir, Log: &out}, nodes: []*node{{name: "n1"}}}
	h.logEvidence(t0)
	s := out.String()
	if !strings.Contains(s, "routed again: 1") || !strings.Contains(s, "offline message not stored") ||
		strings.Contains(s, "msg=old") || strings.Contains(s, "unrelated") {
		t.Errorf("evidence:\n%s", s)
	}
}
