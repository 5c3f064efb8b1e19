package server

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"xedge/discovery/dns"
	"xedge/discovery/vip"
	"xedge/xmppd/admin"
)

// The cluster, VIP and DNS metrics read what the real admin commands return
// (the features' own result types), so a renamed field shows here.
func TestFeatureCollector(t *testing.T) {
	s := &Server{Admin: admin.New(t.TempDir()+"/a.sock", nil)}
	last := time.Unix(1_700_000_000, 0)
	s.Admin.Handle("cluster", func(context.Context, []string) (any, error) {
		return []MemberInfo{{Node: "n1", State: "up"}, {Node: "n2", State: "up"}, {Node: "n3", State: "down"}}, nil
	})
	s.Admin.Handle("vip", func(context.Context, []string) (any, error) {
		return VIPView{Node: "n1", Configured: true, Healthy: true, Quorum: true, VIPs: []VIPLine{
			{VIPStatus: vip.VIPStatus{VIP: "192.0.2.10/32", Holder: "n1", State: vip.Master}},
			{VIPStatus: vip.VIPStatus{VIP: "192.0.2.11/32", Holder: "n2", State: vip.Backup}},
			{VIPStatus: vip.VIPStatus{VIP: "192.0.2.12/32"}},
		}}, nil
	})
	s.Admin.Handle("dns", func(context.Context, []string) (any, error) {
		return dns.Status{Serial: 7, Queries: 12, Update: &dns.UpdateStatus{Pushes: 3, Failures: 1, LastSuccess: last}}, nil
	})
	reg := prometheus.NewRegistry()
	if err := reg.Register(featureCollector{s}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[key] = value1(m)
		}
	}
	for k, want := range map[string]float64{
		"xmppd_cluster_members{state=up}":                  2,
		"xmppd_cluster_members{state=down}":                1,
		"xmppd_cluster_members{state=draining}":            0,
		"xmppd_vip_held{vip=192.0.2.10/32}":                1,
		"xmppd_vip_held{vip=192.0.2.11/32}":                0,
		"xmppd_vip_holder{holder=n2}{vip=192.0.2.11/32}":   1,
		"xmppd_vip_holder{holder=none}{vip=192.0.2.12/32}": 1,
		"xmppd_vip_node_healthy":                           1,
		"xmppd_vip_quorum":                                 1,
		"xmppd_dns_serial":                                 7,
		"xmppd_dns_queries_total":                          12,
		"xmppd_dns_updates_total":                          3,
		"xmppd_dns_update_failures":                        1,
		"xmppd_dns_update_last_success_timestamp_seconds":  float64(last.Unix()),
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}

	// A node without those features exports none of them.
	bare := &Server{Admin: admin.New(t.TempDir()+"/b.sock", nil)}
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(featureCollector{bare})
	if mfs, _ := reg2.Gather(); len(mfs) != 0 {
		t.Fatalf("metrics without features: %v", mfs)
	}
}

func value1(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return -1
}
