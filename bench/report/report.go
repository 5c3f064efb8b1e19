// Package report holds the benchmark's result model: per-server figures, xmppd's
// ratios to each peer, the targets, the JSON file and the Markdown table. It owns
// no measurement (bench/workload) and starts nothing.
package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"time"
)

// Figure describes one number in the table.
type Figure struct {
	Key          string `json:"key"`
	Label        string `json:"label"`
	Unit         string `json:"unit"`
	HigherBetter bool   `json:"higher_better"`
}

// Figures in table order.
var Figures = []Figure{
	{"mem_kb_session_plain", "RSS per idle session, no TLS", "KB", false},
	{"mem_kb_session_tls", "RSS per idle session, STARTTLS", "KB", false},
	{"logins_per_s", "logins/s (STARTTLS+SCRAM-SHA-1+bind+presence)", "/s", true},
	{"msgs_per_s", "messages/s delivered, window 10", "/s", true},
	{"p50_ms", "latency p50, window 1", "ms", false},
	{"p99_ms", "latency p99, window 1", "ms", false},
	{"fanout_s", "presence fan-out, time to last delivery", "s", false},
	{"fanout_per_s", "presence fan-out deliveries/s", "/s", true},
	{"muc_per_s", "MUC fan-out deliveries/s (200-occupant room)", "/s", true},
	{"muc_p99_ms", "MUC fan-out latency p99, one message in flight, to the occupant's socket", "ms", false},
	{"muc_p99_read_ms", "MUC fan-out latency p99, one message in flight, to the generator's parse", "ms", false},
	{"mam_p50_ms", "MAM last page of 50, 100k archive, p50", "ms", false},
	{"mam_p99_ms", "MAM last page of 50, 100k archive, p99", "ms", false},
	{"mam_with_p50_ms", "MAM last page of 50 with a with= filter, p50", "ms", false},
	{"mam_with_p99_ms", "MAM last page of 50 with a with= filter, p99", "ms", false},
	{"tsung_req_ms", "tsung mean request time (tsung scenario)", "ms", false},
}

// Target is one goal: xmppd's figure divided by the peer's, bounded.
type Target struct {
	Key   string  `json:"key"`
	Peer  string  `json:"peer"`
	Max   float64 `json:"max,omitempty"` // ratio must be <= Max (lower-is-better figures)
	Min   float64 `json:"min,omitempty"` // ratio must be >= Min
	Ratio float64 `json:"ratio,omitempty"`
	Met   *bool   `json:"met"` // nil: not measured
}

// Targets are the goals, from the same run.
func Targets() []Target {
	t := []Target{
		{Key: "mem_kb_session_tls", Peer: "ejabberd", Max: 0.25},
		{Key: "logins_per_s", Peer: "ejabberd", Min: 4},
		{Key: "msgs_per_s", Peer: "ejabberd", Min: 3},
		{Key: "p99_ms", Peer: "ejabberd", Max: 0.25},
		{Key: "fanout_s", Peer: "ejabberd", Max: 0.33},
		{Key: "muc_per_s", Peer: "ejabberd", Min: 3},
		{Key: "muc_p99_ms", Peer: "ejabberd", Max: 0.33},
		{Key: "mam_p99_ms", Peer: "ejabberd", Max: 0.33},
		{Key: "mam_with_p99_ms", Peer: "ejabberd", Max: 0.33},
	}
	for _, f := range Figures {
		if f.HigherBetter {
			t = append(t, Target{Key: f.Key, Peer: "prosody", Min: 1})
		} else {
			t = append(t, Target{Key: f.Key, Peer: "prosody", Max: 1})
		}
	}
	return t
}

// Server is one server's results.
type Server struct {
	Name    string             `json:"name"`
	Version string             `json:"version"`
	Figures map[string]float64 `json:"figures"`
	Details map[string]any     `json:"details"`
	Errors  map[string]string  `json:"errors,omitempty"`
	Seconds float64            `json:"seconds"`
}

// Run is one benchmark run.
type Run struct {
	Started     time.Time                     `json:"started"`
	Seconds     float64                       `json:"seconds"`
	Quick       bool                          `json:"quick"`
	QuietHost   bool                          `json:"quiet_machine"`
	LoadAvg     [2]string                     `json:"loadavg_start_end"`
	Host        map[string]string             `json:"host"`
	Params      map[string]any                `json:"params"`
	Servers     []*Server                     `json:"servers"`
	Ratios      map[string]map[string]float64 `json:"ratios"` // "xmppd/ejabberd" -> key -> ratio
	Targets     []Target                      `json:"targets"`
	Notes       []string                      `json:"notes,omitempty"`
	CommandLine string                        `json:"command_line"`
}

func (r *Run) server(name string) *Server {
	for _, s := range r.Servers {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Compute fills ratios and targets.
func (r *Run) Compute() {
	r.Ratios = map[string]map[string]float64{}
	x := r.server("xmppd")
	for _, peer := range []string{"ejabberd", "prosody"} {
		p := r.server(peer)
		if x == nil || p == nil {
			continue
		}
		m := map[string]float64{}
		for _, f := range Figures {
			a, aok := x.Figures[f.Key]
			b, bok := p.Figures[f.Key]
			if aok && bok && b != 0 {
				m[f.Key] = a / b
			}
		}
		r.Ratios["xmppd/"+peer] = m
	}
	r.Targets = Targets()
	for i := range r.Targets {
		t := &r.Targets[i]
		v, ok := r.Ratios["xmppd/"+t.Peer][t.Key]
		if !ok {
			continue
		}
		t.Ratio = v
		met := (t.Max == 0 || v <= t.Max) && (t.Min == 0 || v >= t.Min)
		t.Met = &met
	}
}

// WriteJSON writes the run to path.
func (r *Run) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("results json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("results json: %w", err)
	}
	return nil
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "—"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// Markdown renders the table: every figure for every server and xmppd's ratio to
// each peer, then the targets.
func (r *Run) Markdown() string {
	var b strings.Builder
	mode := "full"
	if r.Quick {
		mode = "quick"
	}
	fmt.Fprintf(&b, "Run %s (%s mode, %.0f s, quiet machine: %v, loadavg %s → %s)\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 UTC"), mode, r.Seconds, r.QuietHost, r.LoadAvg[0], r.LoadAvg[1])
	b.WriteString("| figure | unit |")
	for _, s := range r.Servers {
		fmt.Fprintf(&b, " %s |", s.Name)
	}
	ratioCols := []string{}
	for _, peer := range []string{"ejabberd", "prosody"} {
		if _, ok := r.Ratios["xmppd/"+peer]; ok {
			ratioCols = append(ratioCols, peer)
			fmt.Fprintf(&b, " xmppd/%s |", peer)
		}
	}
	b.WriteString("\n|---|---|")
	for range len(r.Servers) + len(ratioCols) {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, f := range Figures {
		fmt.Fprintf(&b, "| %s | %s |", f.Label, f.Unit)
		for _, s := range r.Servers {
			if v, ok := s.Figures[f.Key]; ok {
				fmt.Fprintf(&b, " %s |", fmtNum(v))
			} else {
				b.WriteString(" n/a |")
			}
		}
		for _, peer := range ratioCols {
			if v, ok := r.Ratios["xmppd/"+peer][f.Key]; ok {
				fmt.Fprintf(&b, " %.2fx |", v)
			} else {
				b.WriteString(" — |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\nVersions: ")
	for i, s := range r.Servers {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", s.Name, s.Version)
	}
	b.WriteString("\n")
	if len(r.Targets) > 0 {
		b.WriteString("\nTargets (xmppd / peer, same run):\n\n")
		for _, t := range r.Targets {
			bound := fmt.Sprintf("≤ %.2fx", t.Max)
			if t.Min != 0 {
				bound = fmt.Sprintf("≥ %.2fx", t.Min)
			}
			state := "not measured"
			if t.Met != nil {
				state = fmt.Sprintf("%.2fx — ", t.Ratio)
				if *t.Met {
					state += "met"
				} else {
					state += "NOT met"
				}
			}
			fmt.Fprintf(&b, "- %s vs %s %s: %s\n", t.Key, t.Peer, bound, state)
		}
	}
	var errs []string
	for _, s := range r.Servers {
		for k, e := range s.Errors {
			errs = append(errs, fmt.Sprintf("- %s %s: %s", s.Name, k, e))
		}
	}
	if len(errs) > 0 {
		b.WriteString("\nErrors:\n\n" + strings.Join(errs, "\n") + "\n")
	}
	for _, n := range r.Notes {
		b.WriteString("\nNote: " + n + "\n")
	}
	return b.String()
}
