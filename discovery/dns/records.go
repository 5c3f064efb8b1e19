package dns

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"
)

// Node is one cluster member as DNS publishing sees it.
type Node struct {
	Name       string
	Addrs      []netip.Addr // client-facing addresses (A/AAAA)
	C2SPort    uint16       // STARTTLS client port (0: not offered)
	C2STLSPort uint16       // direct TLS client port, XEP-0368 (0: not offered)
	S2SPort    uint16       // server-to-server port (0: not offered)
	Healthy    bool         // accepting logins, storage usable
	InService  bool         // false: a spare (member, holds no VIP, gets no SRV)
	Draining   bool         // serving its clients but taking no new ones
	Load       int          // live client connections
}

// VIP is one virtual address and the node that holds it ("" = nobody).
type VIP struct {
	Addr   netip.Addr
	Holder string
}

// View is the cluster as DNS publishing needs it.
type View struct {
	Nodes []Node
	VIPs  []VIP
}

// The service owner labels under the XMPP domain.
const (
	SvcClient    = "_xmpp-client._tcp"
	SvcClientTLS = "_xmpps-client._tcp" // XEP-0368
	SvcServer    = "_xmpp-server._tcp"
)

// SRV priorities (lower is tried first). Clients that ignore weights
// (Conversations sorts by priority only) still follow these, so load and
// draining are expressed as priorities, weights only spread load within one.
const (
	PrioVIP          = 10 // a VIP held by a healthy, unloaded node
	PrioNode         = 15 // a healthy, unloaded node directly
	PrioVIPLoaded    = 20 // a VIP whose holder is loaded
	PrioNodeLoaded   = 25 // a loaded node
	PrioVIPDraining  = 30 // a VIP whose holder is draining (it is about to move)
	PrioNodeDraining = 35 // a draining node: only when nothing else answers
)

// Params are the publishing settings.
type Params struct {
	Zone        string   // zone apex we are authoritative for (or update), e.g. "example.org."
	Domain      string   // XMPP domain; the SRV owners live under it and it must be in Zone
	Self        string   // this node's name (an NS when NS is empty)
	TTL         uint32   // TTL of every record and the negative-caching TTL
	NS          []string // explicit name servers (FQDNs); empty: the healthy nodes' host names
	Mbox        string   // SOA RNAME; default hostmaster.<zone>
	DomainAddrs bool     // A/AAAA at the domain itself (clients without SRV, RFC 6120 3.2.2)
	NodeLabel   string   // node hosts are <node>.<NodeLabel>.<zone>; default "node"
	VIPLabel    string   // VIP hosts are <addr>.<VIPLabel>.<zone>; default "vip"
	LoadFactor  float64  // loaded: load > average × LoadFactor (and ≥ LoadMin above it); default 1.5
	LoadMin     int      // smallest excess over the average that counts as loaded; default 50
	LoadHigh    int      // loaded at or above this many connections regardless of the average (0: off)
}

// Normalize fills defaults and makes names canonical (lowercase, fully qualified).
func (p Params) Normalize() Params {
	p.Zone = canon(p.Zone)
	p.Domain = canon(p.Domain)
	if p.TTL == 0 {
		p.TTL = 30
	}
	if p.Mbox == "" {
		p.Mbox = "hostmaster." + p.Zone
	}
	p.Mbox = canon(p.Mbox)
	for i := range p.NS {
		p.NS[i] = canon(p.NS[i])
	}
	if p.NodeLabel == "" {
		p.NodeLabel = "node"
	}
	if p.VIPLabel == "" {
		p.VIPLabel = "vip"
	}
	if p.LoadFactor <= 1 {
		p.LoadFactor = 1.5
	}
	if p.LoadMin <= 0 {
		p.LoadMin = 50
	}
	return p
}

// Check reports settings that cannot produce a valid zone.
func (p Params) Check() error {
	p = p.Normalize()
	var errs []error
	if _, ok := mdns.IsDomainName(p.Zone); !ok || p.Zone == "." {
		errs = append(errs, fmt.Errorf("zone %q is not a domain name", p.Zone))
	}
	if !mdns.IsSubDomain(p.Zone, p.Domain) {
		errs = append(errs, fmt.Errorf("domain %s is outside zone %s: the SRV records %s.%s cannot be published in it", p.Domain, p.Zone, SvcClient, p.Domain))
	}
	for _, l := range []string{p.NodeLabel, p.VIPLabel} {
		if label(l) != l {
			errs = append(errs, fmt.Errorf("host label %q: want lowercase letters, digits and '-'", l))
		}
	}
	return errors.Join(errs...)
}

func canon(s string) string { return strings.ToLower(mdns.Fqdn(strings.TrimSpace(s))) }

// label turns a node name into one DNS label: lowercase letters, digits and '-'.
func label(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 50 {
		s = s[:50]
	}
	if s == "" {
		s = "node"
	}
	return s
}

// Builder turns a View into records. It remembers which nodes it last called
// loaded, so a node hovering at the threshold does not flip between priorities
// on every build (enter above LoadFactor, leave below halfway to it). It is
// safe for concurrent use.
type Builder struct {
	p      Params
	mu     sync.Mutex
	loaded map[string]bool
}

// NewBuilder returns a builder for p (normalized).
func NewBuilder(p Params) *Builder { return &Builder{p: p.Normalize(), loaded: map[string]bool{}} }

// Params returns the normalized settings.
func (b *Builder) Params() Params { return b.p }

// Target is one published SRV target, for status output.
type Target struct {
	Service  string `json:"service"`
	Target   string `json:"target"`
	Port     uint16 `json:"port"`
	Priority uint16 `json:"priority"`
	Weight   uint16 `json:"weight"`
	Node     string `json:"node"`          // the node serving it (a VIP's holder)
	VIP      string `json:"vip,omitempty"` // the VIP address, for a VIP target
	Why      string `json:"why"`           // ok, loaded, draining
}

// Result is one build: the records (no SOA; NS at the apex included), the
// SRV targets and which nodes counted as loaded.
type Result struct {
	RRs     []mdns.RR
	Targets []Target
	Loaded  []string
}

// NodeHost is the host name of node name.
func (b *Builder) NodeHost(name string) string {
	return label(name) + "." + b.p.NodeLabel + "." + b.p.Zone
}

// VIPHost is the host name of a VIP address: 10-0-0-100.vip.<zone>.
func (b *Builder) VIPHost(a netip.Addr) string {
	return strings.NewReplacer(".", "-", ":", "-").Replace(a.Unmap().String()) + "." + b.p.VIPLabel + "." + b.p.Zone
}

// Build computes the records for v.
func (b *Builder) Build(v View) Result {
	p := b.p
	nodes := append([]Node(nil), v.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	hosts := b.hostNames(nodes)
	byName := map[string]*Node{}
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	eligible := func(n *Node) bool { return n.Healthy && n.InService && len(n.Addrs) > 0 }

	// Loaded nodes, relative to the average of the eligible, non-draining ones.
	b.mu.Lock()
	defer b.mu.Unlock()
	var sum, cnt int
	for i := range nodes {
		if n := &nodes[i]; eligible(n) && !n.Draining {
			sum += max(n.Load, 0)
			cnt++
		}
	}
	avg := 0.0
	if cnt > 0 {
		avg = float64(sum) / float64(cnt)
	}
	loaded := map[string]bool{}
	for i := range nodes {
		n := &nodes[i]
		if !eligible(n) || n.Draining {
			continue
		}
		l := float64(n.Load)
		factor, minEx, high := p.LoadFactor, float64(p.LoadMin), float64(p.LoadHigh)
		if b.loaded[n.Name] { // hysteresis: leave only clearly below the threshold
			factor, minEx, high = 1+(p.LoadFactor-1)/2, minEx/2, high*0.9
		}
		if (p.LoadHigh > 0 && l >= high) || (l > avg*factor && l-avg >= minEx) {
			loaded[n.Name] = true
		}
	}
	b.loaded = loaded

	type cand struct {
		host   string
		node   *Node
		vip    netip.Addr
		prio   uint16
		load   float64
		why    string
		isVIP  bool
		addrs  []netip.Addr
		holder string
	}
	var cands []cand
	state := func(n *Node) (string, uint16, uint16) { // why, VIP prio, node prio
		switch {
		case n.Draining:
			return "draining", PrioVIPDraining, PrioNodeDraining
		case loaded[n.Name]:
			return "loaded", PrioVIPLoaded, PrioNodeLoaded
		}
		return "ok", PrioVIP, PrioNode
	}
	vipsOf := map[string]int{}
	for _, vp := range v.VIPs {
		if n := byName[vp.Holder]; n != nil && vp.Addr.IsValid() {
			vipsOf[n.Name]++
		}
	}
	for _, vp := range v.VIPs {
		n := byName[vp.Holder]
		if n == nil || !vp.Addr.IsValid() || !n.Healthy || !n.InService {
			continue
		}
		why, vprio, _ := state(n)
		cands = append(cands, cand{host: b.VIPHost(vp.Addr), node: n, vip: vp.Addr, prio: vprio, why: why, isVIP: true,
			load: float64(max(n.Load, 0)) / float64(vipsOf[n.Name]), addrs: []netip.Addr{vp.Addr.Unmap()}})
	}
	for i := range nodes {
		n := &nodes[i]
		if !eligible(n) {
			continue
		}
		why, _, nprio := state(n)
		cands = append(cands, cand{host: hosts[n.Name], node: n, prio: nprio, why: why, load: float64(max(n.Load, 0)), addrs: n.Addrs})
	}

	var res Result
	hdr := func(name string, t uint16) mdns.RR_Header {
		return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: p.TTL}
	}
	addrRRs := map[string]bool{} // host names already given A/AAAA
	addAddrs := func(name string, addrs []netip.Addr) {
		if addrRRs[name] {
			return
		}
		addrRRs[name] = true
		seen := map[netip.Addr]bool{}
		for _, a := range addrs {
			a = a.Unmap()
			if !a.IsValid() || seen[a] {
				continue
			}
			seen[a] = true
			if a.Is4() {
				res.RRs = append(res.RRs, &mdns.A{Hdr: hdr(name, mdns.TypeA), A: a.AsSlice()})
			} else {
				res.RRs = append(res.RRs, &mdns.AAAA{Hdr: hdr(name, mdns.TypeAAAA), AAAA: a.AsSlice()})
			}
		}
	}
	services := []struct {
		svc  string
		port func(*Node) uint16
	}{
		{SvcClient, func(n *Node) uint16 { return n.C2SPort }},
		{SvcClientTLS, func(n *Node) uint16 { return n.C2STLSPort }},
		{SvcServer, func(n *Node) uint16 { return n.S2SPort }},
	}
	for _, s := range services {
		owner := s.svc + "." + p.Domain
		offered := false
		for i := range nodes {
			offered = offered || s.port(&nodes[i]) != 0
		}
		if !offered {
			// RFC 2782: a lone "." target says the service is decidedly not
			// available here, so peers do not fall back to the domain's A.
			res.RRs = append(res.RRs, &mdns.SRV{Hdr: hdr(owner, mdns.TypeSRV), Target: "."})
			continue
		}
		for _, c := range cands {
			port := s.port(c.node)
			if port == 0 {
				continue
			}
			w := weight(c.load, avg)
			res.RRs = append(res.RRs, &mdns.SRV{Hdr: hdr(owner, mdns.TypeSRV), Priority: c.prio, Weight: w, Port: port, Target: c.host})
			t := Target{Service: s.svc, Target: c.host, Port: port, Priority: c.prio, Weight: w, Node: c.node.Name, Why: c.why}
			if c.isVIP {
				t.VIP = c.vip.String()
			}
			res.Targets = append(res.Targets, t)
			addAddrs(c.host, c.addrs)
		}
	}

	// The domain's own A/AAAA: the VIPs in the best tier, else the best nodes.
	if p.DomainAddrs {
		best := map[bool]uint16{true: 0xffff, false: 0xffff}
		for _, c := range cands {
			best[c.isVIP] = min(best[c.isVIP], c.prio)
		}
		useVIP := best[true] != 0xffff && best[true] <= best[false]
		var addrs []netip.Addr
		for _, c := range cands {
			if c.isVIP == useVIP && c.prio == best[useVIP] {
				addrs = append(addrs, c.addrs...)
			}
		}
		addAddrs(p.Domain, addrs)
	}

	// Name servers: the configured ones, else every healthy node (spares
	// included: they run the server too) and this node.
	ns := append([]string(nil), p.NS...)
	if len(ns) == 0 {
		for i := range nodes {
			n := &nodes[i]
			if (n.Healthy || n.Name == p.Self) && len(n.Addrs) > 0 {
				ns = append(ns, hosts[n.Name])
				addAddrs(hosts[n.Name], n.Addrs)
			}
		}
	}
	for _, n := range ns {
		res.RRs = append(res.RRs, &mdns.NS{Hdr: hdr(p.Zone, mdns.TypeNS), Ns: n})
	}
	for n := range loaded {
		res.Loaded = append(res.Loaded, n)
	}
	sort.Strings(res.Loaded)
	sortRRs(res.RRs)
	return res
}

// hostNames gives every node a distinct host label (a hash suffix settles the
// rare collision of two names that sanitize alike).
func (b *Builder) hostNames(sorted []Node) map[string]string {
	out := map[string]string{}
	used := map[string]string{}
	for _, n := range sorted {
		l := label(n.Name)
		if other, clash := used[l]; clash && other != n.Name {
			h := fnv.New32a()
			h.Write([]byte(n.Name))
			l = fmt.Sprintf("%s-%08x", l, h.Sum32())
		}
		used[l] = n.Name
		out[n.Name] = l + "." + b.p.NodeLabel + "." + b.p.Zone
	}
	return out
}

// weightSteps quantize weights so small swings of the connection counts do
// not change the records (every change is a new serial and, in update mode,
// an RFC 2136 push).
var weightSteps = []uint16{1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000}

// weight is the RFC 2782 weight of a target carrying load connections when
// the eligible nodes carry avg on average: 100 at the average, inversely
// proportional to (load+1), quantized to weightSteps.
func weight(load, avg float64) uint16 {
	raw := 100 * (avg + 1) / (load + 1)
	best := weightSteps[0]
	for _, s := range weightSteps {
		if abs(float64(s)-raw) < abs(float64(best)-raw) {
			best = s
		}
	}
	return best
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// sortRRs orders records by name, type and text, so equal sets compare equal.
func sortRRs(rrs []mdns.RR) {
	sort.SliceStable(rrs, func(i, j int) bool {
		a, b := rrs[i].Header(), rrs[j].Header()
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Rrtype != b.Rrtype {
			return a.Rrtype < b.Rrtype
		}
		return rrs[i].String() < rrs[j].String()
	})
}
