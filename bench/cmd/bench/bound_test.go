package main

import (
	"strings"
	"testing"

	"xedge/bench/report"
	"xedge/bench/workload"
)

func TestGeneratorBoundNotes(t *testing.T) {
	res := &report.Server{Name: "xmppd", Details: map[string]any{
		"logins":        workload.LoginResult{ClientCPU: 0.95, ServerCPU: 0.7},
		"chat_window10": workload.ChatResult{ClientCPU: 0.95, ServerCPU: 0.99}, // server-bound too
		"fanout":        workload.FanoutResult{ClientCPU: 0.5, ServerCPU: 0.5},
	}}
	notes := generatorBound(res)
	if len(notes) != 1 || !strings.Contains(notes[0], "xmppd logins_per_s is generator-bound") {
		t.Errorf("notes = %q", notes)
	}
}

// TestCoreSpeedNotes: a note when the same work took over 15% longer on the
// server CPU for one server's MUC latency phase than for another's, none
// otherwise or when a speed is unknown.
func TestCoreSpeedNotes(t *testing.T) {
	srv := func(name string, before, after float64) *report.Server {
		return &report.Server{Name: name, Details: map[string]any{
			"muc": workload.MUCResult{LatCoreBeforeUs: before, LatCoreAfterUs: after}}}
	}
	notes := coreSpeedNotes([]*report.Server{srv("xmppd", 1100, 1150), srv("ejabberd", 830, 850)})
	if len(notes) != 1 || !strings.Contains(notes[0], "xmppd 1100/1150, ejabberd 830/850") {
		t.Errorf("notes = %q", notes)
	}
	if n := coreSpeedNotes([]*report.Server{srv("xmppd", 900, 880), srv("ejabberd", 830, 850)}); n != nil {
		t.Errorf("within 15%%: notes = %q", n)
	}
	if n := coreSpeedNotes([]*report.Server{srv("xmppd", -1, -1), srv("ejabberd", 830, 850)}); n != nil {
		t.Errorf("unknown speed: notes = %q", n)
	}
}
