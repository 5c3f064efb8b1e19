// Package metrics is xmppd's Prometheus instrumentation: a registry with the Go
// runtime and process collectors, the registration API features use to add
// their own collectors (cluster, VIP, DNS, ...), the HTTP handler serving the
// text exposition format, and LogTap, a slog handler that counts log records
// and keeps the recent warnings for the web admin page.
//
// Metric names follow Prometheus conventions: prefix xmppd_, base units
// (seconds, bytes), _total for counters. The contract for other features is in
// docs/operations.md ("Metrics").
//
// It owns only instrumentation plumbing; it must not import other xmppd
// packages (the server wires collectors to the state they read).
package metrics

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every xmppd metric name.
const Namespace = "xmppd"

// Registry is one server's metrics.
type Registry struct {
	reg *prometheus.Registry
	mu  sync.Mutex
	ids map[string]bool
}

// New returns a registry holding the Go runtime (go_*) and process
// (process_*) collectors.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry(), ids: map[string]bool{}}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Register adds a collector. Names must be unique across the registry; an
// error names the clash.
func (r *Registry) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// Gauge registers a gauge read from fn at every scrape (pull: fn reads the
// state where it already lives; it must be cheap and safe for concurrent use).
func (r *Registry) Gauge(name, help string, fn func() float64) error {
	return r.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, fn))
}

// Counter registers a counter read from fn at every scrape (fn returns a
// monotonically increasing value, e.g. a stats field another package keeps).
func (r *Registry) Counter(name, help string, fn func() float64) error {
	return r.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, fn))
}

// Gatherer is the registry as Prometheus' Gatherer (tests, federation).
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg, ErrorHandling: promhttp.ContinueOnError})
}

// StateSet is a set of 0/1 gauges with one label, exactly one of which is 1:
// the Prometheus idiom for an enum (storage mode, raft role, ...). The value
// is read from fn at every scrape; states lists the values always exported
// (a value fn returns that is not listed is exported too).
func StateSet(name, help, label string, states []string, fn func() string) prometheus.Collector {
	return &stateSet{desc: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, []string{label}, nil), states: states, fn: fn}
}

type stateSet struct {
	desc   *prometheus.Desc
	states []string
	fn     func() string
}

func (s *stateSet) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *stateSet) Collect(ch chan<- prometheus.Metric) {
	cur := s.fn()
	seen := false
	for _, st := range s.states {
		v := 0.0
		if st == cur {
			v, seen = 1, true
		}
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, v, st)
	}
	if !seen && cur != "" {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, 1, cur)
	}
}
