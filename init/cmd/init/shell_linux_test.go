package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"xedge/init/console"
)

// The serial console's restricted shell offers xmppctl's commands, among them
// `vip` and `dns` (issue 11 point 5: both also on the console), next to init's
// own, and its help lists them with their usage.
func TestConsoleOffersXmppctlCommands(t *testing.T) {
	n := &node{}
	cmds := n.shellCommands()
	have := map[string]console.Command{}
	for _, c := range cmds {
		have[c.Name] = c
	}
	for _, want := range []string{"vip", "dns", "cluster", "sessions", "gossip", "storage", "status", "node", "log", "reboot"} {
		if _, ok := have[want]; !ok {
			t.Errorf("the console lacks %q", want)
		}
	}
	if _, ok := have["debug-kill-xmppd"]; ok {
		t.Error("a debug command is offered without xedge.debug=1")
	}
	var out bytes.Buffer
	sh := console.NewShell("xedge> ", cmds)
	if !sh.Exec(context.Background(), "help", &out) {
		t.Fatalf("help failed: %s", out.String())
	}
	for _, want := range []string{"vip", "dns [records]", "cluster members"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console help lacks %q:\n%s", want, out.String())
		}
	}
}
