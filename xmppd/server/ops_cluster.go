package server

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Cluster, VIP and DNS metrics, read at scrape time from the same admin
// commands xmppctl and the web admin page show (cluster members, vip, dns) and
// from the cluster bus' link statistics. Reading the commands' JSON keeps this
// file independent of those features' Go types: a command or field that is
// not there exports nothing. The features may register richer metrics
// themselves (docs/operations.md, "Adding metrics").

type featureCollector struct{ s *Server }

var (
	descMembers   = prometheus.NewDesc("xmppd_cluster_members", "Cluster members in this node's view, by state (up, draining, down).", []string{"state"}, nil)
	descBusQueued = prometheus.NewDesc("xmppd_cluster_bus_queued", "Stanzas queued or unacknowledged on the cluster bus link to a peer.", []string{"peer"}, nil)
	descBusUp     = prometheus.NewDesc("xmppd_cluster_bus_connected", "1 if the cluster bus link to a peer is connected.", []string{"peer"}, nil)
	descVIPHeld   = prometheus.NewDesc("xmppd_vip_held", "1 if this node is the holder of the VIP.", []string{"vip"}, nil)
	descVIPHolder = prometheus.NewDesc("xmppd_vip_holder", "Always 1; the holder label names the VIP's holder in this node's view (none: no holder).", []string{"vip", "holder"}, nil)
	descVIPHealth = prometheus.NewDesc("xmppd_vip_node_healthy", "1 if this node's VIP health checks pass.", nil, nil)
	descVIPQuorum = prometheus.NewDesc("xmppd_vip_quorum", "1 if this node sees a quorum for VIP decisions.", nil, nil)
	descDNSSerial = prometheus.NewDesc("xmppd_dns_serial", "Serial of the DNS zone this node publishes.", nil, nil)
	descDNSQuery  = prometheus.NewDesc("xmppd_dns_queries_total", "Queries answered by the embedded DNS server.", nil, nil)
	descDNSPush   = prometheus.NewDesc("xmppd_dns_updates_total", "RFC 2136 updates pushed to the DNS server.", nil, nil)
	descDNSFail   = prometheus.NewDesc("xmppd_dns_update_failures", "Consecutive failed RFC 2136 updates (0 after a success).", nil, nil)
	descDNSLast   = prometheus.NewDesc("xmppd_dns_update_last_success_timestamp_seconds", "Time of the last successful RFC 2136 update.", nil, nil)
)

// Describe sends nothing: the series depend on the features present (an
// unchecked collector).
func (featureCollector) Describe(chan<- *prometheus.Desc) {}

func (c featureCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	call := func(cmd string, args ...string) any {
		if !hasCommand(s, cmd) {
			return nil
		}
		res, err := s.Admin.Call(ctx, cmd, args)
		if err != nil {
			return nil
		}
		b, err := json.Marshal(res)
		if err != nil {
			return nil
		}
		var v any
		_ = json.Unmarshal(b, &v)
		return v
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if l, ok := call("cluster", "members").([]any); ok {
		n := map[string]float64{"up": 0, "draining": 0, "down": 0}
		for _, m := range l {
			if st, ok := field(m, "state").(string); ok {
				n[st]++
			}
		}
		for st, v := range n {
			gauge(descMembers, v, st)
		}
	}
	if b := s.Bus(); b != nil {
		for _, p := range b.Stats() {
			gauge(descBusQueued, float64(p.Queued), p.Node)
			gauge(descBusUp, boolf(p.Connected), p.Node)
		}
	}
	if v := call("vip"); v != nil && field(v, "configured") == true {
		node, _ := field(v, "node").(string)
		gauge(descVIPHealth, boolf(field(v, "healthy") == true))
		gauge(descVIPQuorum, boolf(field(v, "quorum") == true))
		vips, _ := field(v, "vips").([]any)
		for _, l := range vips {
			ip, _ := field(l, "vip").(string)
			holder, _ := field(l, "holder").(string)
			if ip == "" {
				continue
			}
			gauge(descVIPHeld, boolf(holder != "" && holder == node), ip)
			if holder == "" {
				holder = "none"
			}
			gauge(descVIPHolder, 1, ip, holder)
		}
	}
	if v := call("dns"); v != nil {
		if x, ok := field(v, "serial").(float64); ok {
			gauge(descDNSSerial, x)
		}
		if x, ok := field(v, "queries").(float64); ok {
			ch <- prometheus.MustNewConstMetric(descDNSQuery, prometheus.CounterValue, x)
		}
		if u := field(v, "update"); u != nil {
			if x, ok := field(u, "pushes").(float64); ok {
				ch <- prometheus.MustNewConstMetric(descDNSPush, prometheus.CounterValue, x)
			}
			if x, ok := field(u, "failures").(float64); ok {
				gauge(descDNSFail, x)
			}
			if ts, ok := field(u, "last_success").(string); ok {
				if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
					gauge(descDNSLast, float64(t.UnixNano())/1e9)
				}
			}
		}
	}
}

func hasCommand(s *Server, cmd string) bool {
	cmds := s.Admin.Commands()
	i := sort.SearchStrings(cmds, cmd)
	return i < len(cmds) && cmds[i] == cmd
}

func field(v any, k string) any {
	m, _ := v.(map[string]any)
	return m[k]
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (f *opsFeature) featureCollectors() error {
	if err := f.reg.Register(featureCollector{f.s}); err != nil {
		return err
	}
	return f.reg.Register(iscsiCollector{})
}
