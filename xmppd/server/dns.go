package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"xedge/discovery"
	dnspub "xedge/discovery/dns"
	"xedge/storage"
)

// The DNS publishing feature (docs/dns.md): the embedded authoritative server
// (dns-listen) and RFC 2136 updates to a primary (dns-update), both fed from
// the membership view; `xmppctl dns` shows what is served and pushed.

func init() { registerFeature(Feature{Name: "dns", Build: buildDNS}) }

// vipHolders maps a Server to the function that returns its VIP holders.
var vipHolders sync.Map // *Server -> func() map[string]string

// SetVIPHolders overrides where DNS publishing learns which node holds which
// VIP (by default the VIP feature's ephemeral table VIPTable): f returns VIP
// address (with or without prefix length) -> holder node name ("" = nobody).
// It may be called at any time; DNS reads it on every poll.
func (s *Server) SetVIPHolders(f func() map[string]string) { vipHolders.Store(s, f) }

type dnsFeature struct {
	s      *Server
	gate   dnspub.Gate // other nodes enter DNS once their client port answers
	pub    *dnspub.Publisher
	srv    *dnspub.Server
	unsub  func()
	cancel context.CancelFunc
	done   chan struct{}
}

func buildDNS(s *Server) ([]StagedComponent, error) {
	dc := s.cfg.DNS
	if !dc.Enabled() {
		s.Admin.Handle("dns", func(context.Context, []string) (any, error) {
			return nil, fmt.Errorf("dns publishing is off (set dns-listen and/or dns-update)")
		})
		return nil, nil
	}
	zone := dc.Zone
	if zone == "" {
		zone = s.cfg.Domain
	}
	p := dnspub.Params{Zone: zone, Domain: s.cfg.Domain, Self: s.cfg.Node, TTL: uint32(dc.TTL / time.Second), NS: dc.NSList(),
		DomainAddrs: dc.DomainAddrs, LoadFactor: dc.LoadFactor, LoadMin: dc.LoadMin, LoadHigh: dc.LoadHigh}
	if err := p.Check(); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	p = p.Normalize()
	f := &dnsFeature{s: s}
	f.gate.Notify = func() { f.pub.Notify() }
	pc := dnspub.PublisherConfig{Params: p, Source: f.view, LoadInterval: dc.LoadInterval, Resync: dc.Resync, Log: s.log,
		PushRole: f.pushRole}
	if dc.Listen != "" {
		f.srv = dnspub.NewServer(dc.Listen, s.log)
		pc.Server = f.srv
	}
	if dc.Update != "" {
		key, err := dnspub.LoadKeyFile(dc.TSIGKeyFile)
		if err != nil {
			return nil, fmt.Errorf("dns-tsig-key-file: %w", err)
		}
		uz := dc.UpdateZone
		if uz == "" {
			uz = p.Zone
		}
		puc := dnspub.PusherConfig{Server: dc.Update, Zone: uz, Key: key, Domain: p.Domain,
			DomainAddrs: p.DomainAddrs, HostSuffix: []string{p.NodeLabel + "." + p.Zone, p.VIPLabel + "." + p.Zone}}
		if err := puc.Check(); err != nil {
			return nil, fmt.Errorf("dns-update: %w", err)
		}
		pc.Pusher = dnspub.NewPusher(puc)
	}
	f.pub = dnspub.NewPublisher(pc)
	s.Admin.Handle("dns", func(context.Context, []string) (any, error) { return f.pub.Status(), nil })
	return []StagedComponent{{Stage: AfterModules, Name: "dns", Start: f.start, Stop: f.stop}}, nil
}

func (f *dnsFeature) start(ctx context.Context) error {
	if f.srv != nil {
		if err := f.srv.Start(ctx); err != nil {
			return err
		}
	}
	if err := f.pub.Start(ctx); err != nil {
		return err
	}
	// Membership changes are published at once (the publisher also polls).
	ch, unsub := f.s.Membership().Subscribe()
	f.unsub = unsub
	cctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() {
		defer close(f.done)
		for {
			select {
			case <-cctx.Done():
				return
			case <-ch:
				f.pub.Notify()
			}
		}
	}()
	return nil
}

func (f *dnsFeature) stop(ctx context.Context) error {
	if f.cancel != nil {
		f.cancel()
		<-f.done
		f.unsub()
	}
	err := f.pub.Stop(ctx)
	if f.srv != nil {
		if e := f.srv.Stop(ctx); e != nil && err == nil {
			err = e
		}
	}
	return err
}

// pushRole: the raft leader pushes RFC 2136 updates (a single node pushes
// itself). Only the majority side of a partition has a leader, so a minority
// never pushes its smaller view over the majority's.
func (f *dnsFeature) pushRole() (bool, string) {
	if !f.s.cfg.Clustered() {
		return true, f.s.cfg.Node
	}
	l := f.s.Store.Status().Leader
	return l != "" && l == f.s.cfg.Node, l
}

// view turns the membership view into DNS publishing's input.
func (f *dnsFeature) view() dnspub.View {
	s := f.s
	var v dnspub.View
	seen := map[string]bool{}
	for _, m := range s.Membership().Members() {
		if m.Tags.Role == discovery.RoleWitness {
			continue // serves no XMPP
		}
		n := dnspub.Node{Name: m.Name, C2SPort: uint16(m.Tags.C2SPort), C2STLSPort: uint16(m.Tags.C2STLSPort),
			S2SPort: uint16(s.cfg.DNS.S2SPort), InService: m.Tags.InService, Draining: m.Tags.Draining, Load: m.Tags.Load,
			Healthy: (m.Status == discovery.StatusAlive || m.Status == discovery.StatusSuspect) && (m.Tags.Health == "" || m.Tags.Health == "ok")}
		if a := m.Host(); a.IsValid() && !a.IsUnspecified() {
			n.Addrs = []netip.Addr{a.Unmap()}
		}
		if m.Name != s.cfg.Node {
			// A restarted node is gossiped alive before it listens: publish it
			// once its client port accepted a connection.
			port := n.C2SPort
			if port == 0 {
				port = n.C2STLSPort
			}
			var ap netip.AddrPort
			if len(n.Addrs) > 0 {
				ap = netip.AddrPortFrom(n.Addrs[0], port)
			}
			if !f.gate.Admit(m.Name, ap, n.Healthy && n.InService) {
				n.Healthy = false
			}
		}
		if m.Name == s.cfg.Node {
			if !s.cfg.Clustered() {
				// No gossip polls the count into the tag. (In a cluster every
				// node reads the gossiped counts, so all nodes answer alike.)
				n.Load = s.Router.Count()
			}
			if len(n.Addrs) == 0 {
				n.Addrs = f.localAddrs()
			}
			// The ports actually bound (a configured port 0 is known only
			// once c2s listens; until then this node is not serving).
			var bound bool
			for _, a := range s.C2S.Addrs() {
				kind, hp, _ := strings.Cut(a, " ")
				if p := portOf(hp); p > 0 {
					bound = true
					if kind == "starttls" {
						n.C2SPort = uint16(p)
					} else {
						n.C2STLSPort = uint16(p)
					}
				}
			}
			if !bound && (s.cfg.C2S != "" || s.cfg.C2STLS != "") {
				n.Healthy = false
			}
		}
		v.Nodes = append(v.Nodes, n)
		seen[m.Name] = true
	}
	f.gate.Forget(seen)
	holders := f.vipHoldersFromTable
	if h, ok := vipHolders.Load(s); ok {
		holders = h.(func() map[string]string)
	}
	if len(s.cfg.VIP.Prefixes()) > 0 {
		for addr, holder := range holders() {
			if a, err := netip.ParseAddr(addr); err == nil {
				v.VIPs = append(v.VIPs, dnspub.VIP{Addr: a, Holder: holder})
			} else if pfx, err := netip.ParsePrefix(addr); err == nil {
				v.VIPs = append(v.VIPs, dnspub.VIP{Addr: pfx.Addr(), Holder: holder})
			}
		}
		sort.Slice(v.VIPs, func(i, j int) bool { return v.VIPs[i].Addr.Less(v.VIPs[j].Addr) })
	}
	return v
}

// localAddrs is this node's client address when membership has none (a
// single node): the client listener's host when it is a specific address,
// else the host's global unicast addresses.
func (f *dnsFeature) localAddrs() []netip.Addr {
	var out []netip.Addr
	for _, hp := range []string{f.s.cfg.C2S, f.s.cfg.C2STLS, f.s.cfg.AdvertiseAddr, f.s.cfg.ClusterAddr} {
		host, _, err := net.SplitHostPort(hp)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			return append(out, a.Unmap())
		}
	}
	// Listening on every address: publish the global unicast ones.
	addrs, _ := net.InterfaceAddrs()
	for _, ad := range addrs {
		if pfx, err := netip.ParsePrefix(ad.String()); err == nil && pfx.Addr().IsGlobalUnicast() {
			out = append(out, pfx.Addr().Unmap())
		}
	}
	return out
}

// vipHoldersFromTable reads who announces which VIP from the VIP feature's
// ephemeral table (each node's own row lists the VIPs it holds); the
// configured pool's other VIPs map to "" (nobody).
func (f *dnsFeature) vipHoldersFromTable() map[string]string {
	out := map[string]string{}
	for _, p := range f.s.cfg.VIP.Prefixes() {
		out[p.Addr().String()] = ""
	}
	var rows []storage.Row
	f.s.Store.Ephemeral(VIPTable).Scan("", func(r storage.Row) bool {
		rows = append(rows, r)
		return true
	})
	for vip, node := range holdersFromRows(rows) {
		out[vip] = node
	}
	return out
}

// holdersFromRows maps each VIP address to the node whose row says it holds
// it (rows of leaving nodes skipped; during a handover two nodes may both
// announce for a moment: the lower name is kept, so every node answers alike).
func holdersFromRows(rows []storage.Row) map[string]string {
	out := map[string]string{}
	for _, r := range rows {
		if r.Node != r.Key {
			continue
		}
		var row struct {
			Holds   []string `json:"holds"`
			Leaving bool     `json:"leaving"`
		}
		if json.Unmarshal(r.Value, &row) != nil || row.Leaving {
			continue
		}
		for _, h := range row.Holds {
			a, err := netip.ParseAddr(h)
			if err != nil {
				p, perr := netip.ParsePrefix(h)
				if perr != nil {
					continue
				}
				a = p.Addr()
			}
			k := a.String()
			if cur, ok := out[k]; !ok || r.Node < cur {
				out[k] = r.Node
			}
		}
	}
	return out
}
