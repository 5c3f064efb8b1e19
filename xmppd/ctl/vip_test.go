package ctl

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestRenderVIP(t *testing.T) {
	raw := `{"node":"n1","interface":"eth0","configured":true,"quorum":true,"priority":150,"healthy":true,"in_service":true,"preempt":true,
	"vips":[{"vip":"10.0.0.100/24","holder":"n1","reason":"kept by its holder","since":"2026-01-01T00:00:00Z","state":"master","tickled":3}],
	"tracks":[{"name":"c2s","up":true,"weight":0,"rise":2,"fall":2,"successes":5,"failures":0}],
	"nodes":[{"name":"n1","healthy":true,"in_service":true,"priority":150,"preemptible":true,"holds":["10.0.0.100/24"]}],"known":3}`
	var b bytes.Buffer
	if err := render(&b, "vip", nil, json.RawMessage(raw)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"node n1", "priority 150", "1 nodes seen of 3 known", "10.0.0.100/24", "master", "kept by its holder", "c2s"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := render(&b, "vip", nil, json.RawMessage(`{"node":"n1","configured":false,"note":"no VIPs configured (--vip)"}`)); err != nil || !strings.Contains(b.String(), "no VIPs configured") {
		t.Fatalf("%v %s", err, b.String())
	}
}
