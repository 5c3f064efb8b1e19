package ctl

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestRenderDNS(t *testing.T) {
	raw := `{"zone":"example.org.","domain":"example.org.","serial":1796505983,"changed":"2026-12-05T21:26:23Z",
	"listen":"0.0.0.0:53","queries":12,"loaded":["n2"],
	"targets":[{"service":"_xmpp-client._tcp","target":"n1.node.example.org.","port":5222,"priority":15,"weight":100,"node":"n1","why":"ok"},
	           {"service":"_xmpp-client._tcp","target":"n2.node.example.org.","port":5222,"priority":25,"weight":30,"node":"n2","why":"loaded"}],
	"records":["example.org. 30 IN SOA ...","_xmpp-client._tcp.example.org. 30 IN SRV 15 100 5222 n1.node.example.org."],
	"update":{"server":"192.0.2.53:53","zone":"example.org.","key":"xedge.","pusher":"n1","this_node":true,
	          "last_result":"not-applied","last_error":"update accepted but not applied: ...","failures":3,"pushes":0,
	          "next_retry":"2026-12-05T21:27:00Z","last_report":{"changed":["_xmpp-client._tcp.example.org. SRV"],"verified":false}}}`
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := renderDNS(&b, nil, v); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"serial 1796505983", "embedded server: 0.0.0.0:53", "loaded nodes: n2",
		"_xmpp-client._tcp  25        30", "loaded", "pusher n1 (this node: true)", "last result: not-applied",
		"consecutive failures: 3", "last error: update accepted but not applied", "next retry: 2026-12-05T21:27:00Z",
		"last change (verified false): _xmpp-client._tcp.example.org. SRV"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	renderDNS(&b, []string{"records"}, v)
	if strings.Count(b.String(), "\n") != 2 || !strings.HasPrefix(b.String(), "example.org. 30 IN SOA") {
		t.Errorf("records:\n%s", b.String())
	}
	b.Reset()
	var off any
	json.Unmarshal([]byte(`{"zone":"example.org.","targets":[]}`), &off)
	renderDNS(&b, nil, off)
	if !strings.Contains(b.String(), "embedded server: off") || !strings.Contains(b.String(), "rfc2136 updates: off") {
		t.Errorf("nothing configured:\n%s", b.String())
	}
}
