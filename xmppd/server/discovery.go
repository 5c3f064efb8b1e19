package server

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"xedge/discovery"
	"xedge/xmppd/metrics"
	"xedge/xmppd/version"
)

// discoveries holds each Server's membership (built once, on first use, by
// whichever comes first: Membership or the discovery feature's Build, so a
// feature built earlier still gets the live view).
var discoveries sync.Map // *Server -> *discoveryState

type discoveryState struct {
	once  sync.Once
	view  discovery.View
	agent *discovery.Agent // nil without gossip
	err   error            // building the agent failed (reported by Build)
}

func (s *Server) discovery() *discoveryState {
	v, _ := discoveries.LoadOrStore(s, &discoveryState{})
	st := v.(*discoveryState)
	st.once.Do(func() {
		st.agent, st.err = s.newAgent()
		if st.agent != nil {
			st.view = st.agent
		} else {
			st.view = discovery.NewStaticView(s.localMember())
		}
	})
	return st
}

// Membership returns the cluster membership view of this node: every member
// with its gossip status and tags (discovery.View). It is never nil: a single
// node, or one with discovery off, gets a view holding only itself. VIP
// placement and DNS publishing read it; call it from a Feature's Build or later.
func (s *Server) Membership() discovery.View { return s.discovery().view }

// memberMarker is the file in the data directory that says this node has been
// part of a cluster: on its next start it announces itself as a member at once,
// so that a fresh node booting at the same moment joins it instead of
// bootstrapping a second cluster (docs/discovery.md).
const memberMarker = "cluster-member"

func init() {
	registerFeature(Feature{Name: "discovery", Build: buildDiscovery})
}

// buildDiscovery starts Serf membership before the store (BeforeStorage): it
// joins seeds, DNS SRV seeds and what the subnet scan finds, and, when join is
// empty, chooses the store's join seeds (or lets it bootstrap) by the bootstrap
// rule. After the store has started it keeps the node's tags current.
func buildDiscovery(s *Server) ([]StagedComponent, error) {
	cfg := s.cfg
	src := cfg.DiscoverySources()
	s.Admin.Handle("gossip", func(ctx context.Context, args []string) (any, error) { return gossipMembers(s.Membership()), nil })
	ds := s.discovery()
	if ds.err != nil {
		return nil, ds.err
	}
	if ds.agent == nil {
		// No gossip: the static view of this node alone still shows its
		// storage mode and sessions.
		return s.tagKeeper(ds.view), nil
	}
	agent, d := ds.agent, cfg.Discovery
	if err := s.Metrics().Register(gossipCollector{agent}); err != nil {
		s.log.Warn("discovery metrics not registered", "component", "discovery", "err", err)
	}

	start := func(ctx context.Context) error {
		if err := agent.Start(ctx); err != nil {
			return err
		}
		if !src.AutoJoin {
			return nil
		}
		jctx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
		defer cancel()
		dec, err := agent.AutoJoin(jctx, discovery.AutoJoinOptions{Window: d.Window, Expect: d.BootstrapExpect})
		if err != nil {
			_ = agent.Stop(ctx)
			return err
		}
		if dec.Action == discovery.Join {
			// The store reads the join seeds in its Start, which runs next.
			cfg.Join = strings.Join(dec.Join, ",")
		}
		return nil
	}
	return append([]StagedComponent{{Stage: BeforeStorage, Name: "discovery", Start: start, Stop: agent.Stop}},
		s.tagKeeper(agent)...), nil
}

// newAgent builds (no I/O) the Serf agent the configuration asks for; nil
// without gossip.
func (s *Server) newAgent() (*discovery.Agent, error) {
	cfg := s.cfg
	src := cfg.DiscoverySources()
	if !src.Serf {
		return nil, nil
	}
	key, err := cfg.LoadClusterKey()
	if err != nil {
		return nil, err
	}
	bind, adv, err := cfg.GossipAddrs()
	if err != nil {
		return nil, err
	}
	local := s.localMember()
	d := cfg.Discovery
	srvDomain := ""
	if src.DNS {
		srvDomain = d.Domain
	}
	servers, err := discovery.ParseServers(d.DNSServers)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cfg.Data, memberMarker)); err == nil {
		local.Tags.Cluster = discovery.ClusterMember
	}
	return discovery.New(discovery.Config{
		NodeName: cfg.Node, BindAddr: bind, AdvertiseAddr: adv, ClusterKey: key, Tags: local.Tags,
		SnapshotPath: filepath.Join(cfg.Data, "serf.snapshot"), Logger: s.log,
		Seeds: cfg.GossipSeeds(), SRVDomain: srvDomain, DNSServers: servers, ReverseDNS: d.ReverseDNS,
		Scan: src.Scan, ScanRate: d.ScanRate, ScanMaxBits: d.ScanMaxPrefix, ClusterPort: uint16(portOf(cfg.ClusterAddr)),
		ProbeInterval: d.ProbeInterval, SuspicionMult: d.SuspicionMult,
	})
}

// tagKeeper returns the AfterStorage component that runs keepTags on view.
func (s *Server) tagKeeper(view discovery.View) []StagedComponent {
	var (
		cancel context.CancelFunc
		wg     sync.WaitGroup
	)
	return []StagedComponent{{Stage: AfterStorage, Name: "discovery tags",
		Start: func(context.Context) error {
			ctx, c := context.WithCancel(context.Background())
			cancel = c
			wg.Add(1)
			go func() { defer wg.Done(); s.keepTags(ctx, view) }()
			return nil
		},
		Stop: func(context.Context) error {
			if cancel != nil {
				cancel()
			}
			wg.Wait()
			return nil
		}}}
}

// keepTags marks this node a cluster member once its store runs, and keeps
// the storage mode and session count in its tags (checked every second; the
// agent gossips only changes).
func (s *Server) keepTags(ctx context.Context, v discovery.View) {
	marker := filepath.Join(s.cfg.Data, memberMarker)
	if _, err := os.Stat(marker); err != nil && s.cfg.Clustered() {
		msg := "this node joined a cluster at " + time.Now().UTC().Format(time.RFC3339) + "; it announces itself as a member on start\n"
		if err := os.WriteFile(marker, []byte(msg), 0o600); err != nil {
			s.log.Warn("cannot write the cluster member marker", "component", "discovery", "file", marker, "err", err)
		}
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		st := s.Store.Status()
		load := s.Router.Count()
		_ = v.UpdateTags(func(t *discovery.Tags) {
			t.Storage, t.Load = st.Mode, load
			if s.cfg.Clustered() {
				t.Cluster = discovery.ClusterMember
			}
		})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

var (
	membersDesc = prometheus.NewDesc(metrics.Namespace+"_discovery_members", "Members of the gossip pool by status, as this node sees them.", []string{"status"}, nil)
	refusedDesc = prometheus.NewDesc(metrics.Namespace+"_discovery_wrong_key_refusals_total", "Gossip senders refused because their messages were not encrypted with this cluster's key (counted once per sender and 30 s, as logged).", nil, nil)
)

// gossipCollector exports the membership view at scrape time.
type gossipCollector struct{ a *discovery.Agent }

func (gossipCollector) Describe(ch chan<- *prometheus.Desc) { ch <- membersDesc; ch <- refusedDesc }

func (c gossipCollector) Collect(ch chan<- prometheus.Metric) {
	n := map[discovery.Status]int{discovery.StatusAlive: 0, discovery.StatusSuspect: 0, discovery.StatusFailed: 0, discovery.StatusLeft: 0}
	for _, m := range c.a.Members() {
		n[m.Status]++
	}
	for st, k := range n {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(k), string(st))
	}
	ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(len(c.a.KeyRefused())))
}

// gossipMember is one row of the admin command "gossip".
type gossipMember struct {
	Node      string `json:"node"`
	Addr      string `json:"addr"`
	State     string `json:"state"`
	DNSName   string `json:"dns_name,omitempty"`
	FoundBy   string `json:"found_by"`
	Role      string `json:"role"`
	Cluster   string `json:"cluster"`
	Cluster2  string `json:"cluster_addr"`
	Storage   string `json:"storage,omitempty"`
	Sessions  int    `json:"sessions"`
	InService bool   `json:"in_service"`
	Since     string `json:"since"`
}

func gossipMembers(v discovery.View) []gossipMember {
	var out []gossipMember
	for _, m := range v.Members() {
		out = append(out, gossipMember{Node: m.Name, Addr: m.Addr.String(), State: string(m.Status), DNSName: m.DNSName,
			FoundBy: m.FoundBy, Role: string(m.Tags.Role), Cluster: m.Tags.Cluster, Cluster2: m.Tags.ClusterAddr,
			Storage: m.Tags.Storage, Sessions: m.Tags.Load, InService: m.Tags.InService, Since: m.Since.UTC().Format(time.RFC3339)})
	}
	return out
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
	if cfg.Clustered() {
		if _, adv, err := cfg.GossipAddrs(); err == nil && cfg.DiscoverySources().Serf {
			m.Addr = adv
		} else if ap, err := netip.ParseAddrPort(t.ClusterAddr); err == nil {
			m.Addr = ap
		}
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
