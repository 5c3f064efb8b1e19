package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestComputeRatiosAndTargets(t *testing.T) {
	r := &Run{Servers: []*Server{
		{Name: "xmppd", Figures: map[string]float64{"mem_kb_session_tls": 10, "logins_per_s": 2000, "p99_ms": 30}},
		{Name: "ejabberd", Figures: map[string]float64{"mem_kb_session_tls": 60, "logins_per_s": 365, "p99_ms": 81}},
		{Name: "prosody", Figures: map[string]float64{"mem_kb_session_tls": 38, "logins_per_s": 88}},
	}}
	r.Compute()
	if got := r.Ratios["xmppd/ejabberd"]["logins_per_s"]; got < 5.47 || got > 5.48 {
		t.Fatalf("ratio = %v", got)
	}
	met := map[string]*bool{}
	for _, tg := range r.Targets {
		met[tg.Key+"/"+tg.Peer] = tg.Met
	}
	if m := met["mem_kb_session_tls/ejabberd"]; m == nil || !*m {
		t.Error("memory target should be met (10/60 = 0.17)")
	}
	if m := met["p99_ms/ejabberd"]; m == nil || *m {
		t.Error("p99 target should not be met (30/81 = 0.37)")
	}
	if met["msgs_per_s/ejabberd"] != nil {
		t.Error("unmeasured figure has a verdict")
	}
	md := r.Markdown()
	for _, want := range []string{"| logins/s", "xmppd/ejabberd", "5.48x", "NOT met", "n/a"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	p := filepath.Join(t.TempDir(), "r.json")
	if err := r.WriteJSON(p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	var back Run
	if err := json.Unmarshal(b, &back); err != nil || len(back.Servers) != 3 {
		t.Fatalf("round trip: %v", err)
	}
}
