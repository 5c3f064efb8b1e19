package server

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"xedge/discovery"
)

func TestGossipCollector(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	a, err := discovery.New(discovery.Config{NodeName: "m1", BindAddr: addr, ClusterKey: []byte("0123456789abcdef0123")})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	reg := prometheus.NewRegistry()
	if err := reg.Register(gossipCollector{a}); err != nil {
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
			for _, lp := range m.GetLabel() {
				key += "{" + lp.GetValue() + "}"
			}
			if m.Gauge != nil {
				got[key] = m.Gauge.GetValue()
			} else if m.Counter != nil {
				got[key] = m.Counter.GetValue()
			}
		}
	}
	if got["xmppd_discovery_members{alive}"] != 1 || got["xmppd_discovery_members{failed}"] != 0 {
		t.Fatalf("members: %v", got)
	}
	if v, ok := got["xmppd_discovery_wrong_key_refusals_total"]; !ok || v != 0 {
		t.Fatalf("refusals: %v", got)
	}
}
