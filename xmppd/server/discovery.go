package server

import (
	"net"
	"net/netip"
	"strconv"
	"sync"

	"xedge/discovery"
	"xedge/xmppd/version"
)

// memberships holds each Server's membership view (built on first use).
var memberships sync.Map // *Server -> discovery.View

// Membership returns the cluster membership view of this node: every member
// with its gossip status and tags (discovery.View). It is never nil: a single
// node, or one with discovery off, gets a view holding only itself. VIP
// placement and DNS publishing read it; call it from a Feature's Build or later.
func (s *Server) Membership() discovery.View {
	if v, ok := memberships.Load(s); ok {
		return v.(discovery.View)
	}
	v, _ := memberships.LoadOrStore(s, discovery.View(discovery.NewStaticView(s.localMember())))
	return v.(discovery.View)
}

// localMember describes this node from its configuration.
func (s *Server) localMember() discovery.Member {
	cfg := s.cfg
	t := discovery.Tags{Role: discovery.RoleNode, ClusterAddr: cfg.AdvertiseAddr, Version: version.Version, InService: true, Health: "ok"}
	if t.ClusterAddr == "" {
		t.ClusterAddr = cfg.ClusterAddr
	}
	if cfg.Witness {
		t.Role, t.InService = discovery.RoleWitness, false
	} else {
		t.C2SPort, t.C2STLSPort = portOf(cfg.C2S), portOf(cfg.C2STLS)
	}
	m := discovery.Member{Name: cfg.Node, Status: discovery.StatusAlive, Tags: t, FoundBy: "self"}
	if ap, err := netip.ParseAddrPort(t.ClusterAddr); err == nil {
		m.Addr = ap
	}
	return m
}

func portOf(hostport string) int {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
