package metrics

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gometrics "github.com/hashicorp/go-metrics"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestRegistryServesParsableText(t *testing.T) {
	r := New()
	mode := "durable"
	n := 0.0
	if err := r.Gauge("things", "Things.", func() float64 { n++; return n }); err != nil {
		t.Fatal(err)
	}
	if err := r.Gauge("things", "Again.", func() float64 { return 0 }); err == nil {
		t.Fatal("duplicate name registered")
	}
	if err := r.Register(StateSet("storage_mode", "Mode.", "mode", []string{"durable", "ram-only"}, func() string { return mode })); err != nil {
		t.Fatal(err)
	}
	parse := func() map[string]float64 {
		w := httptest.NewRecorder()
		r.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(w.Body)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for name, mf := range mfs {
			for _, m := range mf.GetMetric() {
				key := name
				for _, l := range m.GetLabel() {
					key += fmt.Sprintf("{%s=%s}", l.GetName(), l.GetValue())
				}
				if m.Gauge != nil {
					out[key] = m.Gauge.GetValue()
				}
			}
		}
		if _, ok := mfs["go_goroutines"]; !ok {
			t.Error("no Go runtime metrics")
		}
		return out
	}
	a := parse()
	if a["xmppd_things"] != 1 || a["xmppd_storage_mode{mode=durable}"] != 1 || a["xmppd_storage_mode{mode=ram-only}"] != 0 {
		t.Fatalf("first scrape %v", a)
	}
	mode = "degraded-ram" // not listed: exported too
	b := parse()
	if b["xmppd_things"] != 2 || b["xmppd_storage_mode{mode=durable}"] != 0 || b["xmppd_storage_mode{mode=degraded-ram}"] != 1 {
		t.Fatalf("second scrape %v", b)
	}
}

func TestLogTapCountsAndKeepsWarnings(t *testing.T) {
	var out bytes.Buffer
	tap := NewLogTap(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}))
	log := slog.New(tap).With("component", "c2s")
	log.Info(AuthFailedMsg, "user", "alice")
	log.Debug("chatter")
	for i := 0; i < RingSize+5; i++ {
		log.Warn("slow disk", "i", i)
	}
	log.Error("boom", "err", "x")
	if tap.AuthFailures() != 1 {
		t.Fatalf("auth failures %d", tap.AuthFailures())
	}
	rec := tap.Recent()
	if len(rec) != RingSize || rec[0].Message != "boom" || rec[0].Level != "ERROR" || !strings.Contains(rec[1].Attrs, "component=c2s") ||
		!strings.Contains(rec[1].Attrs, fmt.Sprintf("i=%d", RingSize+4)) {
		t.Fatalf("recent: %d, first %+v, second %+v", len(rec), rec[0], rec[1])
	}
	if s := out.String(); strings.Contains(s, "slow disk") || !strings.Contains(s, "boom") {
		t.Fatalf("the real handler's level was not respected:\n%s", s)
	}
	if got := tap.st.counts[1].Load(); got != 1 {
		t.Fatalf("info records %d", got)
	}
}

// What raft, serf and memberlist report through go-metrics' global functions
// arrives under Prometheus names, timers in seconds.
func TestGoMetricsSinkThroughGoMetricsGlobal(t *testing.T) {
	sink := InstallGoMetricsSink()
	r := New()
	if err := r.Register(sink); err != nil {
		t.Fatal(err)
	}
	gometrics.MeasureSince([]string{"raft", "commitTime"}, time.Now().Add(-3*time.Millisecond))
	gometrics.IncrCounter([]string{"raft", "state", "leader"}, 1)
	gometrics.IncrCounterWithLabels([]string{"serf", "member", "failed"}, 1, []gometrics.Label{{Name: "x", Value: "y"}})
	gometrics.SetGauge([]string{"raft", "peers"}, 3)
	gometrics.IncrCounter([]string{"raft", "replication", "appendEntries", "logs", "peer-id"}, 1) // not exported
	w := httptest.NewRecorder()
	r.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	h := mfs["xmppd_raft_commit_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() < 1 || h.GetSampleSum() < 0.002 || h.GetSampleSum() > 5 {
		t.Fatalf("commit histogram: count %d sum %v (want seconds)", h.GetSampleCount(), h.GetSampleSum())
	}
	found := false
	for _, m := range mfs["xmppd_raft_state_changes_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetValue() == "leader" && m.GetCounter().GetValue() >= 1 {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("raft state change to leader not counted")
	}
	if g := mfs["xmppd_raft_peers"].GetMetric()[0].GetGauge().GetValue(); g != 3 {
		t.Fatalf("raft_peers %v", g)
	}
	for name := range mfs {
		if strings.Contains(name, "peer") && name != "xmppd_raft_peers" {
			t.Fatalf("per-peer metric exported: %s", name)
		}
	}
}
