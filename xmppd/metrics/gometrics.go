package metrics

import (
	"strings"
	"sync"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// GoMetricsSink receives what hashicorp/raft, serf and memberlist (and xedge's
// storage/local) report through hashicorp/go-metrics (they call its global
// functions) and exports a chosen few under Prometheus names: timers become histograms in seconds, counters
// get _total, per-peer keys are dropped. It is installed once per process
// (InstallGoMetricsSink), like the libraries' global.
type GoMetricsSink struct {
	hists    map[string]prometheus.Histogram
	counters map[string]prometheus.Counter
	gauges   map[string]prometheus.Gauge
	all      []prometheus.Collector
}

// timerBuckets are the histogram buckets (seconds) of the libraries' timers.
var timerBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func newGoMetricsSink() *GoMetricsSink {
	s := &GoMetricsSink{hists: map[string]prometheus.Histogram{}, counters: map[string]prometheus.Counter{}, gauges: map[string]prometheus.Gauge{}}
	hist := func(key, name, help string) {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: timerBuckets})
		s.hists[key] = h
		s.all = append(s.all, h)
	}
	counter := func(key, name, help string, labels ...string) {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: constLabels(labels)})
		s.counters[key] = c
		s.all = append(s.all, c)
	}
	gauge := func(key, name, help string) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help})
		s.gauges[key] = g
		s.all = append(s.all, g)
	}
	hist("raft.commitTime", "raft_commit_seconds", "Raft: time from the leader dispatching a log entry to its commit (the storage commit latency of a cluster).")
	hist("raft.leader.dispatchLog", "raft_dispatch_log_seconds", "Raft: time the leader takes to write a batch of entries to its own log.")
	hist("raft.fsm.apply", "raft_fsm_apply_seconds", "Raft: time to apply a committed entry to the tables.")
	hist("raft.rpc.appendEntries.storeLogs", "raft_store_logs_seconds", "Raft: time a follower takes to write replicated entries to its log.")
	hist("raft.leader.lastContact", "raft_leader_last_contact_seconds", "Raft: time since the leader last heard from a follower (sampled).")
	hist("raft.snapshot.persist", "raft_snapshot_persist_seconds", "Raft: time to write a snapshot.")
	hist("storage.local.commit", "storage_commit_seconds", "Storage: time for a write to be committed on this node's own store (a single node; a cluster's is raft_commit_seconds).")
	hist("memberlist.gossip", "memberlist_gossip_seconds", "Memberlist: time of one gossip round.")
	counter("raft.apply", "raft_applies_total", "Raft: entries submitted on this node while leader.")
	counter("raft.transition.heartbeat_timeout", "raft_heartbeat_timeouts_total", "Raft: heartbeat timeouts (a follower lost its leader and started an election).")
	for _, st := range []string{"candidate", "follower", "leader"} {
		counter("raft.state."+st, "raft_state_changes_total", "Raft: transitions of this node into each state.", "state", st)
	}
	for _, m := range []string{"alive", "suspect", "dead"} {
		counter("memberlist.msg."+m, "memberlist_messages_total", "Memberlist: alive, suspect and dead messages processed.", "kind", m)
	}
	for _, e := range []string{"join", "failed", "left", "flap", "update", "reap"} {
		counter("serf.member."+e, "serf_member_events_total", "Serf: member events (join, failed, left, flap, update, reap).", "event", e)
	}
	gauge("raft.peers", "raft_peers", "Raft: voters and non-voters in the configuration, as the leader sees them.")
	gauge("memberlist.health.score", "memberlist_health_score", "Memberlist: local health (0 is healthy; higher means this node is slow to answer probes).")
	return s
}

func constLabels(kv []string) prometheus.Labels {
	if len(kv) < 2 {
		return nil
	}
	return prometheus.Labels{kv[0]: kv[1]}
}

// keyOf joins a go-metrics key, or returns "" for families not exported (no
// allocation for those).
func keyOf(key []string) string {
	if len(key) == 0 {
		return ""
	}
	switch key[0] {
	case "raft", "memberlist", "serf", "storage":
		return strings.Join(key, ".")
	}
	return ""
}

// SetGauge implements gometrics.MetricSink.
func (s *GoMetricsSink) SetGauge(key []string, val float32) {
	if g := s.gauges[keyOf(key)]; g != nil {
		g.Set(float64(val))
	}
}

// SetGaugeWithLabels implements gometrics.MetricSink (labels dropped).
func (s *GoMetricsSink) SetGaugeWithLabels(key []string, val float32, _ []gometrics.Label) {
	s.SetGauge(key, val)
}

// EmitKey implements gometrics.MetricSink (nothing is exported from it).
func (s *GoMetricsSink) EmitKey([]string, float32) {}

// IncrCounter implements gometrics.MetricSink.
func (s *GoMetricsSink) IncrCounter(key []string, val float32) {
	if c := s.counters[keyOf(key)]; c != nil && val >= 0 {
		c.Add(float64(val))
	}
}

// IncrCounterWithLabels implements gometrics.MetricSink (labels dropped).
func (s *GoMetricsSink) IncrCounterWithLabels(key []string, val float32, _ []gometrics.Label) {
	s.IncrCounter(key, val)
}

// AddSample implements gometrics.MetricSink: timers arrive in milliseconds.
func (s *GoMetricsSink) AddSample(key []string, val float32) {
	if h := s.hists[keyOf(key)]; h != nil {
		h.Observe(float64(val) / 1000)
	}
}

// AddSampleWithLabels implements gometrics.MetricSink (labels dropped).
func (s *GoMetricsSink) AddSampleWithLabels(key []string, val float32, _ []gometrics.Label) {
	s.AddSample(key, val)
}

// Describe implements prometheus.Collector.
func (s *GoMetricsSink) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.all {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s *GoMetricsSink) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.all {
		c.Collect(ch)
	}
}

var (
	sinkOnce sync.Once
	theSink  *GoMetricsSink
)

// InstallGoMetricsSink makes GoMetricsSink the process's go-metrics sink (once) and
// returns it; register it on a Registry to export its metrics.
func InstallGoMetricsSink() *GoMetricsSink {
	sinkOnce.Do(func() {
		theSink = newGoMetricsSink()
		cfg := gometrics.DefaultConfig("")
		cfg.EnableHostname, cfg.EnableHostnameLabel, cfg.EnableServiceLabel = false, false, false
		cfg.EnableRuntimeMetrics = false // the Go collector has them
		_, _ = gometrics.NewGlobal(cfg, theSink)
	})
	return theSink
}
