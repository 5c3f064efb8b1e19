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
