package webadmin

import (
	"context"
	"strings"
	"sync"
	"testing"
)

// The page's cluster sections show what a clustered node's admin commands
// answer: the members (asked with "cluster members"), the VIPs with their
// holders, and the DNS records; each under its heading.
func TestPageShowsClusterVIPAndDNS(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]string{}
	h := New(Options{
		Domain: "example.org", Node: "n1", Version: "test", Admins: []string{"boss"}, Secure: true,
		Check:    func(user, pass string) (string, bool, error) { return user, pass == "pw", nil },
		Commands: func() []string { return []string{"status", "cluster", "vip", "dns"} },
		Call: func(_ context.Context, cmd string, args []string) (any, error) {
			mu.Lock()
			asked[cmd] = strings.Join(args, " ")
			mu.Unlock()
			switch cmd {
			case "cluster":
				return []map[string]any{
					{"node": "n1", "addr": "10.0.0.1:7400", "state": "up", "incarnation": "17", "sessions": 3, "storage": "voter/durable/leader"},
					{"node": "n2", "addr": "10.0.0.2:7400", "state": "down", "sessions": 0, "storage": "voter/durable"},
				}, nil
			case "vip":
				return map[string]any{"node": "n1", "quorum": true, "vips": []map[string]any{
					{"vip": "10.0.0.100/24", "holder": "n1", "state": "master", "reason": "taken over: no eligible holder"}}}, nil
			case "dns":
				return map[string]any{"zone": "example.org.", "serial": 1796505983, "records": []map[string]any{
					{"service": "_xmpp-client._tcp", "priority": 10, "target": "10-0-0-100.vip.example.org.", "vip": "10.0.0.100"}}}, nil
			}
			return map[string]any{"domain": "example.org"}, nil
		},
	})
	code, body := get(t, h, "192.0.2.1:4000", "boss", "pw")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if asked["cluster"] != "members" {
		t.Errorf("cluster section asked %q, want \"members\"", asked["cluster"])
	}
	// Each section's content follows its own heading.
	for _, sec := range []struct {
		id, title string
		want      []string
	}{
		{"members", "Cluster members", []string{"10.0.0.1:7400", "voter/durable/leader", "17", "n2", "down"}},
		{"vips", "Virtual IPs", []string{"10.0.0.100/24", "master", "taken over: no eligible holder"}},
		{"dns", "DNS", []string{"_xmpp-client._tcp", "10-0-0-100.vip.example.org.", "1796505983"}},
	} {
		i := strings.Index(body, `<section id="`+sec.id+`"`)
		if i < 0 {
			t.Errorf("no %q section:\n%s", sec.id, body)
			continue
		}
		rest := body[i:]
		if j := strings.Index(rest, "</section>"); j >= 0 {
			rest = rest[:j]
		}
		if !strings.Contains(rest, sec.title) {
			t.Errorf("section %q lacks its title %q", sec.id, sec.title)
		}
		for _, w := range sec.want {
			if !strings.Contains(rest, w) {
				t.Errorf("%s section lacks %q:\n%s", sec.title, w, rest)
			}
		}
		if strings.Contains(rest, "not available on this node") {
			t.Errorf("%s section says not available although the command exists", sec.title)
		}
	}
}
