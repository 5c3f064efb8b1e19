package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"xedge/xmppd/httpd"
	"xedge/xmppd/metrics"
	"xedge/xmppd/module"
	"xedge/xmppd/tlscert"
	"xedge/xmppd/version"
	"xedge/xmppd/webadmin"
	"xedge/xmppd/xmlstream"
)

// The operations feature: Prometheus metrics (pull collectors reading the
// router's and the store's state, router hooks counting stanzas and logins),
// the node's HTTP listener (--http: /metrics, the web admin page /admin/, and
// whatever other features mount), and a metrics-only listener (--metrics).

func init() { registerFeature(Feature{Name: "operations", Build: buildOps}) }

// opsFeatures maps a Server to its operations state (Server.Metrics, Server.HTTP).
var opsFeatures sync.Map

type opsFeature struct {
	s    *Server
	once sync.Once
	err  error
	reg  *metrics.Registry
	http *httpd.Server // nil without --http
	mets *httpd.Server // nil without --metrics

	stanzasIn, stanzasOut *prometheus.CounterVec
	in, out               [4]prometheus.Counter // by stanzaKind, resolved once (no label lookup per stanza)
	logins                prometheus.Counter
	routing               prometheus.Histogram
	sample                atomic.Uint64
	inflight              sync.Map // *xmlstream.Element -> time.Time (sampled stanzas)
	inflightN             atomic.Int64
}

func (s *Server) ops() *opsFeature {
	v, _ := opsFeatures.LoadOrStore(s, &opsFeature{s: s})
	f := v.(*opsFeature)
	f.once.Do(f.init)
	return f
}

// Metrics returns the server's metrics registry. Features add their
// collectors in their Build (docs/operations.md, "Metrics").
func (s *Server) Metrics() *metrics.Registry { return s.ops().reg }

// HTTP returns the node's HTTP listener, on which features mount handlers in
// their Build (before Start), or nil when --http is off.
func (s *Server) HTTP() *httpd.Server { return s.ops().http }

func (f *opsFeature) init() {
	f.reg = metrics.New()
	cfg := f.s.cfg
	if cfg.Ops.HTTP != "" {
		var err error
		if cfg.Ops.HTTPTLS {
			certFile, keyFile := cfg.Cert, cfg.Key
			if certFile == "" {
				certFile, keyFile, _, err = tlscert.EnsureSelfSigned(filepath.Join(cfg.Data, "tls"), cfg.Domain)
			}
			if err == nil {
				tlsCfg, terr := tlscert.Config(certFile, keyFile)
				if terr != nil {
					err = terr
				} else {
					f.http = httpd.New(cfg.Ops.HTTP, tlsCfg, f.s.log)
				}
			}
		} else {
			f.http = httpd.New(cfg.Ops.HTTP, nil, f.s.log)
		}
		if err != nil {
			f.err = fmt.Errorf("http listener: %w", err)
		}
	}
	if cfg.Ops.Metrics != "" {
		f.mets = httpd.New(cfg.Ops.Metrics, nil, f.s.log)
	}
}

// opsListeners names the HTTP listeners for `xmppctl status`.
func (s *Server) opsListeners() []string {
	f := s.ops()
	var out []string
	if f.http != nil {
		out = append(out, "http "+f.http.URL()+" (/metrics, /admin/)")
	}
	if f.mets != nil {
		out = append(out, "metrics "+f.mets.URL()+"/metrics")
	}
	return out
}

func buildOps(s *Server) ([]StagedComponent, error) {
	f := s.ops()
	if f.err != nil {
		return nil, f.err
	}
	if err := f.collectors(); err != nil {
		return nil, err
	}
	var comps []StagedComponent
	if f.http != nil {
		if err := f.http.Handle("GET /metrics", f.reg.Handler()); err != nil {
			return nil, err
		}
		wa := webadmin.New(webadmin.Options{
			Domain: s.cfg.Domain, Node: s.cfg.Node, Version: version.Version,
			Admins: s.cfg.AdminList(), Secure: f.http.TLS(),
			Check:    func(user, pass string) (string, bool, error) { return s.Accounts.CheckPassword(user, pass) },
			Call:     s.Admin.Call,
			Commands: s.Admin.Commands,
			Recent: func() []metrics.Record {
				if t := metrics.Tap(); t != nil {
					return t.Recent()
				}
				return nil
			},
			Logger: s.log,
		})
		for _, p := range []string{"GET /admin/", "GET /admin"} {
			if err := f.http.Handle(p, wa); err != nil {
				return nil, err
			}
		}
		comps = append(comps, StagedComponent{Stage: AfterC2S, Name: "http " + s.cfg.Ops.HTTP, Start: f.http.Start, Stop: f.http.Stop})
	}
	if f.mets != nil {
		if err := f.mets.Handle("GET /metrics", f.reg.Handler()); err != nil {
			return nil, err
		}
		comps = append(comps, StagedComponent{Stage: AfterC2S, Name: "metrics " + s.cfg.Ops.Metrics, Start: f.mets.Start, Stop: f.mets.Stop})
	}
	return comps, nil
}

// stanzaKinds are the values of the type label, indexed by stanzaKind.
var stanzaKinds = [4]string{"message", "presence", "iq", "other"}

// stanzaKind is the index of a stanza's kind in stanzaKinds.
func stanzaKind(local string) int {
	switch local {
	case "message":
		return 0
	case "presence":
		return 1
	case "iq":
		return 2
	}
	return 3
}

// routingSample is 1 in how many client stanzas whose routing is timed.
const routingSample = 16

// maxInflight bounds the sampled stanzas awaiting delivery (those routed
// elsewhere, to another node or offline storage, never reach EvDeliver; the
// map is cleared when it fills).
const maxInflight = 512

func (f *opsFeature) collectors() error {
	s := f.s
	f.stanzasIn = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "stanzas_in_total",
		Help: "Stanzas received from local client sessions, by type."}, []string{"type"})
	f.stanzasOut = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "stanzas_out_total",
		Help: "Stanzas routed for delivery to local accounts, by type."}, []string{"type"})
	f.logins = prometheus.NewCounter(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "logins_total",
		Help: "Successful client logins (resources bound)."})
	f.routing = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: metrics.Namespace, Name: "routing_latency_seconds",
		Help:    "Time from a client message's arrival to its delivery to a local account (1 message in 16 timed, groupchat messages not).",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}})
	for i, t := range stanzaKinds { // also exports zeros from the start
		f.in[i] = f.stanzasIn.WithLabelValues(t)
		f.out[i] = f.stanzasOut.WithLabelValues(t)
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metrics.Namespace, Name: "build_info",
		Help: "Always 1; labels carry the version, domain and node."}, []string{"version", "domain", "node"})
	info.WithLabelValues(version.Version, s.cfg.Domain, s.cfg.Node).Set(1)

	storageModes := []string{"durable", "ram-only", "degraded-ram", "read-only"}
	errs := []error{
		f.reg.Register(f.stanzasIn), f.reg.Register(f.stanzasOut), f.reg.Register(f.logins), f.reg.Register(f.routing),
		f.reg.Register(info),
		f.reg.Gauge("sessions", "Client sessions bound on this node.", func() float64 { return float64(s.Router.Count()) }),
		f.reg.Gauge("uptime_seconds", "Seconds since xmppd started.", func() float64 {
			if s.started.IsZero() {
				return 0
			}
			return time.Since(s.started).Seconds()
		}),
		f.reg.Gauge("routing_inflight_samples", "Sampled stanzas routed but not (yet) delivered locally.", func() float64 { return float64(f.inflightN.Load()) }),
		f.reg.Register(metrics.StateSet("storage_mode", "Storage mode of this node (1 for the current one).", "mode", storageModes,
			func() string { return s.Store.Status().Mode })),
		f.reg.Register(metrics.StateSet("storage_role", "Raft role of this node (voter, nonvoter, witness; single for a single node).", "role",
			[]string{"voter", "nonvoter", "witness"}, func() string {
				if r := s.Store.Status().Role; r != "" {
					return r
				}
				return "single"
			})),
		f.reg.Gauge("storage_leader", "1 if this node is the raft leader (or a single node), else 0.", func() float64 {
			st := s.Store.Status()
			if st.Leader == "" && !s.cfg.Clustered() || st.Leader == s.cfg.Node {
				return 1
			}
			return 0
		}),
		f.reg.Gauge("storage_has_leader", "1 if this node knows a raft leader (always 1 on a single node).", func() float64 {
			if !s.cfg.Clustered() || s.Store.Status().Leader != "" {
				return 1
			}
			return 0
		}),
		f.reg.Gauge("storage_applied_index", "Last log index applied by this node's store.", func() float64 { return float64(s.Store.Status().AppliedIdx) }),
		f.reg.Gauge("storage_lag_entries", "Log entries this node is behind the leader's commit index.", func() float64 { return float64(s.Store.Status().LagEntries) }),
		f.reg.Gauge("storage_generation", "Storage generation (grows on every re-persist after a storage loss).", func() float64 { return float64(s.Store.Status().Generation) }),
	}
	if t := metrics.Tap(); t != nil {
		errs = append(errs, f.reg.Register(t.Collector()))
	}
	errs = append(errs, f.featureCollectors())
	// Client connections and queue lengths, from c2s at scrape time.
	errs = append(errs, f.reg.Register(c2sCollector{s}))
	// raft, serf, memberlist and storage/local report through go-metrics.
	errs = append(errs, f.reg.Register(metrics.InstallGoMetricsSink()))
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// Hooks run first (priority far below every module's) and never consume.
	s.Router.Hook(module.EvC2SIn, -1000, func(_ context.Context, _ module.Host, ev *module.EventData) bool {
		f.received(ev.Stanza)
		return false
	})
	s.Router.Hook(module.EvDeliver, -1000, func(_ context.Context, _ module.Host, ev *module.EventData) bool {
		f.delivered(ev.Stanza)
		return false
	})
	s.Router.Hook(module.EvSessionBound, -1000, func(context.Context, module.Host, *module.EventData) bool {
		f.logins.Inc()
		return false
	})
	return nil
}

// received counts a client stanza and samples 1 message in routingSample for the
// routing latency. A groupchat message is never sampled: the room delivers copies,
// never the stanza routed to it, so its sample would only wait for the map to
// fill, and meanwhile every delivery would look it up.
func (f *opsFeature) received(st *xmlstream.Element) {
	k := stanzaKind(st.Local)
	f.in[k].Inc()
	if k == 0 && st.Attr("type") != "groupchat" && f.sample.Add(1)%routingSample == 0 { // messages: the stanzas routed to a user
		if f.inflightN.Load() >= maxInflight {
			f.inflight.Clear()
			f.inflightN.Store(0)
		}
		if _, loaded := f.inflight.LoadOrStore(st, time.Now()); !loaded {
			f.inflightN.Add(1)
		}
	}
}

// delivered counts a stanza delivered to a local session and ends its sample.
func (f *opsFeature) delivered(st *xmlstream.Element) {
	f.out[stanzaKind(st.Local)].Inc()
	if f.inflightN.Load() > 0 {
		if t, ok := f.inflight.LoadAndDelete(st); ok {
			f.inflightN.Add(-1)
			f.routing.Observe(time.Since(t.(time.Time)).Seconds())
		}
	}
}

// c2sCollector exports c2s's snapshot (one walk per scrape).
type c2sCollector struct{ s *Server }

var (
	descC2SConns    = prometheus.NewDesc("xmppd_c2s_connections", "Open client connections.", nil, nil)
	descC2SParked   = prometheus.NewDesc("xmppd_c2s_parked_streams", "Idle client streams waiting in the poller without a goroutine.", nil, nil)
	descC2SQueued   = prometheus.NewDesc("xmppd_c2s_send_queue_stanzas", "Stanzas queued for writing, summed over client sessions.", nil, nil)
	descC2SUnacked  = prometheus.NewDesc("xmppd_c2s_sm_unacked_stanzas", "Stanzas sent and not yet acknowledged (XEP-0198), summed over client sessions.", nil, nil)
	descC2SDetached = prometheus.NewDesc("xmppd_c2s_detached_sessions", "Resumable sessions without a connection (XEP-0198, waiting for resumption).", nil, nil)
)

func (c c2sCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descC2SConns, descC2SParked, descC2SQueued, descC2SUnacked, descC2SDetached} {
		ch <- d
	}
}

func (c c2sCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.C2S.Stats()
	for d, v := range map[*prometheus.Desc]int{descC2SConns: st.Conns, descC2SParked: st.Parked, descC2SQueued: st.SendQueued,
		descC2SUnacked: st.Unacked, descC2SDetached: st.Detached} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
}
