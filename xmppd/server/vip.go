package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xedge/discovery"
	"xedge/discovery/vip"
	"xedge/netcfg"
	"xedge/storage"
	"xedge/xmppd/config"
)

// The VIP feature: the pool of virtual IPs (--vip) spread over the healthy
// in-service nodes. Each node publishes its VIP state (health, effective priority,
// what it holds) in the ephemeral table VIPTable and the client connections it
// holds on its VIPs in VIPConnTable; every node computes the same plan from those
// rows and the membership view (discovery/vip) and executes its own part through
// netcfg (address, gratuitous ARP / unsolicited NA, tickle ACKs for a lost
// holder's clients). `xmppctl vip` shows who holds what, why, since when, and the
// health inputs.

// VIPTable is the ephemeral table of per-node VIP state: key node name, value a
// vipRow. A node's row vanishes when it dies (storage's ephemeral timeout).
const VIPTable = "vip"

// VIPConnTable holds, per node and VIP, the client connections on that VIP
// (key: the VIP, value: JSON []netcfg.Conn), so the node taking the VIP over can
// tickle them.
const VIPConnTable = "vip.conns"

type vipRow struct {
	Healthy     bool     `json:"healthy"`
	InService   bool     `json:"in_service"`
	Priority    int      `json:"priority"`
	Preemptible bool     `json:"preemptible"`
	Holds       []string `json:"holds,omitempty"`
	Leaving     bool     `json:"leaving,omitempty"`
}

func init() { registerFeature(Feature{Name: "vip", Build: buildVIP}) }

type vipEvent struct {
	At time.Time `json:"at"`
	vip.Transition
}

type connCache struct {
	conns []netcfg.Conn
	seen  time.Time
}

type vipFeature struct {
	s      *Server
	cfg    config.VIPConfig
	pool   []netip.Prefix
	names  []string // pool as strings, in order
	agent  *vip.Agent
	health *vip.Health
	checks []vipCheck // the health inputs, each observed every CheckInterval
	notify *vip.Notifier
	mech   *netcfg.VIPs
	// adverts tracks the other nodes' VIP adverts (nil: vip-advert-interval 0);
	// advertKick wakes the loop when an advert deadline may have passed.
	adverts    *vip.Adverts
	advertKick chan struct{}

	mu        sync.Mutex
	conns     map[string]map[string]connCache // vip -> node -> its connections
	known     map[string]bool                 // nodes seen with a VIP row (for quorum)
	lastSeen  map[string]seenRow              // each node's last VIP row, while its member lives
	lastRow   []byte
	lastConns map[string]string
	view      []vip.Node
	knownN    int
	events    []vipEvent
	tickled   map[string]int
	silent    map[string]bool // holders found silent (adverts), for the log
	stalls    int             // this node's own loop stalls (adverts decided nothing meanwhile)
	stallLog  time.Time       // last stall logged (one line per stallLogEvery)
	stallMax  time.Duration   // longest stall since then
	tags      [2]int          // published in-service (0/1) and priority, -1 before the first publish
	rejoin    rejoinSettle

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// inService starts as --in-service; `xmppctl vip in-service on|off` changes it
	// at run time (not persisted: a restart goes back to the flag).
	inService atomic.Bool
}

func buildVIP(s *Server) ([]StagedComponent, error) {
	cfg := s.cfg.VIP
	f := &vipFeature{s: s, cfg: cfg, pool: cfg.Prefixes(), conns: map[string]map[string]connCache{},
		known: map[string]bool{}, lastSeen: map[string]seenRow{}, lastConns: map[string]string{}, tickled: map[string]int{}, tags: [2]int{-1, -1},
		silent: map[string]bool{}, advertKick: make(chan struct{}, 1)}
	f.inService.Store(cfg.InService)
	s.Admin.Handle("vip", func(ctx context.Context, args []string) (any, error) {
		if len(args) == 0 {
			return f.status(), nil
		}
		if len(args) != 2 || args[0] != "in-service" || (args[1] != "on" && args[1] != "off") {
			return nil, fmt.Errorf("usage: vip [in-service on|off]")
		}
		on := args[1] == "on"
		if was := f.inService.Swap(on); was != on {
			f.log("in-service changed by an operator", "in_service", on)
		}
		return f.status(), nil
	})
	var comps []StagedComponent
	if cfg.Firewall {
		fw := &firewallFeature{s: s}
		comps = append(comps, StagedComponent{Stage: BeforeStorage, Name: "firewall", Start: fw.start, Stop: fw.stop})
	}
	if len(f.pool) == 0 {
		return comps, nil
	}
	for _, p := range f.pool {
		f.names = append(f.names, p.String())
	}
	if cfg.AdvertInterval > 0 {
		f.adverts = vip.NewAdverts(cfg.AdvertDeadMult)
	}
	f.agent = vip.NewAgent(vip.AgentConfig{Node: s.cfg.Node, PreemptDelay: cfg.PreemptDelay, HandoverTimeout: cfg.HandoverTimeout,
		Policy: vip.Policy{VIPs: f.names, Preempt: cfg.Preempt, Quorum: cfg.Quorum}})
	tracks := []vip.Track{
		{Name: "c2s", Weight: 0, Rise: cfg.Rise, Fall: cfg.Fall, InitFail: true},
		{Name: "storage", Weight: cfg.StorageWeight, Rise: cfg.Rise, Fall: cfg.Fall},
	}
	if cfg.TrackScript != "" {
		tracks = append(tracks, vip.Track{Name: "script", Weight: cfg.TrackWeight, Rise: cfg.Rise, Fall: cfg.Fall, InitFail: true})
	}
	f.health = vip.NewHealth(cfg.Priority, tracks, time.Now())
	f.checks = []vipCheck{{"c2s", f.checkC2S}, {"storage", func(context.Context) error { return f.checkStorage() }}}
	if cfg.TrackScript != "" {
		f.checks = append(f.checks, vipCheck{"script", f.checkScript})
	}
	f.notify = vip.NewNotifier(vip.Hooks{Master: cfg.NotifyMaster, Backup: cfg.NotifyBackup, Fault: cfg.NotifyFault, Any: cfg.Notify}, s.cfg.Node, s.log)
	return append(comps, StagedComponent{Stage: AfterModules, Name: "vip", Start: f.start, Stop: f.stop}), nil
}

// firewallFeature applies the firewall before cluster traffic starts and repairs
// it every FirewallReconcile. The rules stay when xmppd stops (a node keeps its
// protection across restarts); `iptables -D INPUT -j XEDGE-INPUT` lifts it.
type firewallFeature struct {
	s      *Server
	fw     *netcfg.Firewall
	spec   netcfg.FirewallSpec
	cancel context.CancelFunc
	done   chan struct{}
}

func (w *firewallFeature) start(ctx context.Context) error {
	spec, err := firewallSpec(w.s.cfg)
	if err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	fw, err := netcfg.NewFirewall(w.s.log)
	if err != nil {
		return err
	}
	if _, err := fw.Apply(spec); err != nil {
		return err
	}
	w.fw, w.spec = fw, spec
	rctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go func() {
		defer close(w.done)
		every := w.s.cfg.VIP.FirewallReconcile
		if every <= 0 {
			return
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				if changed, err := fw.Apply(spec); err != nil {
					w.s.log.Warn("firewall reconcile failed", "component", "firewall", "err", err)
				} else if changed {
					w.s.log.Warn("firewall rules had drifted: repaired", "component", "firewall")
				}
			}
		}
	}()
	return nil
}

func (w *firewallFeature) stop(ctx context.Context) error {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
	return nil
}

// firewallSpec derives the firewall from the configuration: the client listeners
// and the DNS listener open to all (unless --firewall-open), the cluster and gossip
// ports open to the cluster subnets only.
func firewallSpec(cfg *config.Config) (netcfg.FirewallSpec, error) {
	v := cfg.VIP
	spec := netcfg.FirewallSpec{RatePerSource: v.FirewallRate, RateBurst: v.FirewallBurst, DropOther: v.FirewallDropOther}
	var err error
	if v.FirewallOpen != "" {
		if spec.Open, err = netcfg.ParsePorts(v.FirewallOpen); err != nil {
			return spec, err
		}
	} else {
		for _, a := range []string{cfg.C2S, cfg.C2STLS} {
			if p := portOf(a); p > 0 && !cfg.Witness {
				spec.Open = append(spec.Open, netcfg.Port{Proto: "tcp", Num: uint16(p)})
			}
		}
		if p := portOf(cfg.DNS.Listen); p > 0 {
			spec.Open = append(spec.Open, netcfg.Port{Proto: "udp", Num: uint16(p)}, netcfg.Port{Proto: "tcp", Num: uint16(p)})
		}
	}
	if v.FirewallClusterPorts != "" {
		if spec.Cluster, err = netcfg.ParsePorts(v.FirewallClusterPorts); err != nil {
			return spec, err
		}
	} else if cp := portOf(cfg.ClusterAddr); cp > 0 {
		gp := cp + 1
		if p := portOf(cfg.Discovery.GossipAddr); p > 0 {
			gp = p
		}
		spec.Cluster = []netcfg.Port{{Proto: "tcp", Num: uint16(cp)}, {Proto: "tcp", Num: uint16(gp)}, {Proto: "udp", Num: uint16(gp)}}
	}
	for _, s := range strings.Split(v.FirewallClusterNets, ",") {
		if s = strings.TrimSpace(s); s != "" {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return spec, err
			}
			spec.ClusterSubnets = append(spec.ClusterSubnets, p.Masked())
		}
	}
	if len(spec.ClusterSubnets) == 0 && len(spec.Cluster) > 0 {
		host, _, _ := net.SplitHostPort(cfg.ClusterAddr)
		ip, err := netip.ParseAddr(host)
		if err != nil || ip.IsUnspecified() {
			return spec, fmt.Errorf("cannot tell the cluster subnet from cluster-addr %q: set --firewall-cluster-subnets", cfg.ClusterAddr)
		}
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.Contains(net.IP(ip.AsSlice())) {
				ones, _ := n.Mask.Size()
				spec.ClusterSubnets = append(spec.ClusterSubnets, netip.PrefixFrom(ip, ones).Masked())
				break
			}
		}
		if len(spec.ClusterSubnets) == 0 {
			return spec, fmt.Errorf("no interface holds the cluster address %s: set --firewall-cluster-subnets", ip)
		}
	}
	return spec, nil
}

func (f *vipFeature) log(msg string, args ...any) {
	f.s.log.Info(msg, append([]any{"component", "vip"}, args...)...)
}

func (f *vipFeature) start(ctx context.Context) error {
	refresh := f.cfg.GARPRefresh
	if refresh <= 0 {
		refresh = -1
	}
	lifetime := f.cfg.AddrLifetime
	if lifetime <= 0 {
		lifetime = -1
	}
	opt := netcfg.VIPOptions{Interface: f.cfg.Interface, Burst: f.cfg.GARPRepeat, Refresh: refresh,
		TickleRate: f.cfg.TickleRate, Lifetime: lifetime, OnConflict: f.onConflict, Log: f.s.log}
	if f.adverts != nil {
		key, err := f.s.cfg.LoadClusterKey()
		if err != nil || len(key) == 0 {
			// Without a cluster key the adverts are only told apart by domain.
			key = []byte("xedge vip advert domain " + f.s.cfg.Domain)
		}
		opt.AdvertNode, opt.AdvertInterval, opt.AdvertKey = f.s.cfg.Node, f.cfg.AdvertInterval, netcfg.AdvertKey(key)
		opt.OnAdvert = f.onAdvert
	}
	mech, err := netcfg.NewVIPs(opt)
	if err != nil {
		return fmt.Errorf("vip: %w", err)
	}
	// Addresses a crashed predecessor left behind would keep answering ARP.
	if err := netcfg.RemoveAddrs(f.cfg.Interface, f.pool); err != nil {
		f.s.log.Warn("vip: removing stale VIP addresses", "component", "vip", "err", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	if err := mech.Start(rctx); err != nil {
		cancel()
		return fmt.Errorf("vip: %w", err)
	}
	f.mech, f.cancel = mech, cancel
	f.notify.Start(rctx)
	f.wg.Add(2)
	go f.checkLoop(rctx)
	go f.loop(rctx)
	f.log("vip pool", "vips", strings.Join(f.names, ","), "interface", f.cfg.Interface, "priority", f.cfg.Priority,
		"preempt", f.cfg.Preempt, "in_service", f.cfg.InService, "advert_interval", f.cfg.AdvertInterval, "advert_dead_mult", f.cfg.AdvertDeadMult)
	return nil
}

func (f *vipFeature) stop(ctx context.Context) error {
	if f.cancel == nil {
		return nil
	}
	// Tell the others this node leaves (it no longer counts for quorum), then
	// withdraw every address.
	row, _ := json.Marshal(vipRow{Leaving: true})
	f.s.Store.Ephemeral(VIPTable).Put(f.s.cfg.Node, row)
	// Stop deciding first (no VIP is taken after this), then withdraw.
	f.cancel()
	f.wg.Wait()
	err := f.mech.Stop(ctx)
	f.notify.Wait()
	for _, n := range f.names {
		f.s.Store.Ephemeral(VIPConnTable).Delete(n)
	}
	return err
}

// checkLoop runs the health checks every CheckInterval.
func (f *vipFeature) checkLoop(ctx context.Context) {
	defer f.wg.Done()
	t := time.NewTicker(f.cfg.CheckInterval)
	defer t.Stop()
	for {
		if f.observe(ctx, time.Now()) {
			p, ok := f.health.Effective()
			f.log("vip health changed", "priority", p, "healthy", ok)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// vipCheck is one health input: a track of f.health by name.
type vipCheck struct {
	name string
	run  func(context.Context) error
}

// observe runs every check once and reports whether the health changed. Every
// check runs each round: a change of one does not skip the others.
func (f *vipFeature) observe(ctx context.Context, now time.Time) (changed bool) {
	for _, c := range f.checks {
		if f.health.Observe(c.name, c.run(ctx), now) {
			changed = true
		}
	}
	return changed
}

// checkC2S: the client listener answers a stream header with a stream of its own
// (xmppd accepting logins, not just a bound socket).
func (f *vipFeature) checkC2S(ctx context.Context) error {
	var addr string
	for _, a := range f.s.C2S.Addrs() {
		kind, hp, _ := strings.Cut(a, " ")
		if kind == "starttls" {
			addr = hp
			break
		}
	}
	if addr == "" {
		return errors.New("no STARTTLS client listener")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.Is6() {
			host = "::1"
		}
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>", f.s.cfg.Domain)
	buf := make([]byte, 512)
	n, err := bufio.NewReader(c).Read(buf)
	if err != nil {
		return fmt.Errorf("c2s stream: %w", err)
	}
	if !strings.Contains(string(buf[:n]), "stream") {
		return errors.New("c2s answered without a stream")
	}
	return nil
}

func (f *vipFeature) checkStorage() error {
	st := f.s.Store.Status()
	if st.Mode == "" || st.Mode == "durable" {
		return nil
	}
	return fmt.Errorf("storage %s", st.Mode)
}

func (f *vipFeature) checkScript(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, max(f.cfg.CheckInterval*4, time.Second))
	defer cancel()
	if out, err := exec.CommandContext(cctx, f.cfg.TrackScript).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// vipTick is the agent's step period; a step later than vipStallAfter says the
// node itself was stalled (a loaded or descheduled vCPU, a long pause).
const (
	vipTick       = 100 * time.Millisecond
	vipStallAfter = 3 * vipTick
)

// loop steps the agent every vipTick, and at once when a peer's advert
// deadline passes, and once per second refreshes the connection rows.
func (f *vipFeature) loop(ctx context.Context) {
	defer f.wg.Done()
	t := time.NewTicker(vipTick)
	defer t.Stop()
	deadline := time.NewTimer(time.Hour)
	defer deadline.Stop()
	var lastConns, lastStep time.Time
	for {
		now := time.Now()
		f.noteStall(lastStep, now)
		lastStep = now
		f.step(ctx, now)
		if now.Sub(lastConns) >= time.Second {
			lastConns = now
			f.syncConns(now)
		}
		if f.adverts != nil {
			if next := f.adverts.NextDeadline(time.Now()); !next.IsZero() {
				// A millisecond past it: Silent wants the dead interval exceeded.
				deadline.Reset(time.Until(next) + time.Millisecond)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-deadline.C:
		case <-f.advertKick:
		}
	}
}

// noteStall: a step that comes vipStallAfter or more after the previous one
// means this node did not run for a while (its vCPU descheduled under load, a
// pause): the adverts that arrived meanwhile may not have been read yet, so no
// peer is found silent for two of the longest advert intervals.
func (f *vipFeature) noteStall(last, now time.Time) {
	if f.adverts == nil || last.IsZero() || now.Sub(last) < vipStallAfter {
		return
	}
	f.adverts.Stalled(now, 2*max(f.cfg.AdvertInterval, vipTick))
	f.mu.Lock()
	f.stalls++
	n := f.stalls
	f.stallMax = max(f.stallMax, now.Sub(last))
	longest := f.stallMax
	logIt := now.Sub(f.stallLog) >= stallLogEvery
	if logIt {
		f.stallLog, f.stallMax = now, 0
	}
	f.mu.Unlock()
	// Under load this happens every second or so: one line per stallLogEvery.
	if logIt {
		f.s.log.Info("vip: this node's loop was stalled; no peer is found silent for a moment", "component", "vip",
			"stalled", now.Sub(last).Round(time.Millisecond), "longest_since_last_line", longest.Round(time.Millisecond), "stalls", n)
	}
}

// stallLogEvery bounds the stall log lines.
const stallLogEvery = 10 * time.Second

// onAdvert records a peer's advert.
func (f *vipFeature) onAdvert(a netcfg.Advert) {
	f.adverts.Heard(a.Node, a.Interval, a.Seq, a.From, a.At)
}

// silentHolder reports whether node, a peer that holds VIPs in its last row,
// has sent no advert for its dead interval: it is taken for dead (its VIPs are
// taken over) before the cluster's failure detection says so. The caller
// holds f.mu (step calls it through buildVIPView under the lock, and
// sync.Mutex is not reentrant: taking it here stopped the VIP loop).
func (f *vipFeature) silentHolder(node string, now time.Time) bool {
	if f.adverts == nil {
		return false
	}
	ago, silent := f.adverts.Silent(node, now)
	was := f.silent[node]
	f.silent[node] = silent
	if silent && !was {
		f.s.log.Info("vip: holder silent (no advert within its dead interval): taken for dead before the cluster declares it failed",
			"component", "vip", "node", node, "silent_for", ago.Round(time.Millisecond))
	} else if !silent && was {
		f.s.log.Info("vip: holder heard again", "component", "vip", "node", node)
	}
	return silent
}

func (f *vipFeature) localMember() discovery.Member {
	return f.s.Membership().Local()
}

func (f *vipFeature) step(ctx context.Context, now time.Time) {
	me := f.s.cfg.Node
	prio, healthy := f.health.Effective()
	inService := f.inService.Load() && !f.localMember().Tags.Draining
	self := f.agent.Self(healthy, inService, prio, now)
	f.publishTags(inService, prio)

	members := f.s.Membership().Members()
	var rows []peerVIPRow
	f.s.Store.Ephemeral(VIPTable).Scan("", func(r storage.Row) bool {
		if r.Node != r.Key || r.Node == me {
			return true
		}
		var row vipRow
		if json.Unmarshal(r.Value, &row) == nil {
			rows = append(rows, peerVIPRow{Node: r.Node, Row: row})
		}
		return true
	})
	f.mu.Lock()
	view := buildVIPView(self, rows, members, f.known, f.lastSeen, now, func(node string) bool { return f.silentHolder(node, now) })
	if waiting := f.rejoin.wait(view, f.cfg.Quorum, members, now); len(waiting) > 0 {
		// Back from a partition: take nothing before the live members that
		// may hold a VIP published their rows here again.
		view.Nodes[0].Healthy = false
		if !f.rejoin.logged {
			f.rejoin.logged = true
			f.s.log.Info("vip: quorum regained; waiting for the rows of live members before taking VIPs", "component", "vip", "members", waiting)
		}
	}
	f.view, f.knownN = view.Nodes, view.Known
	f.mu.Unlock()

	act := f.agent.Step(view, now)
	for _, name := range act.Release {
		if err := f.mech.Remove(f.prefix(name)); err != nil {
			f.s.log.Warn("vip release failed", "component", "vip", "vip", name, "err", err)
		}
	}
	if len(act.Acquire) > 0 && f.rejoin.hadQuorum && now.Sub(f.rejoin.since) < 2*rowGrace {
		// Soon after this node regained quorum: say what it saw (a VIP taken
		// back from a peer that holds it is a view without that peer's row).
		f.s.log.Info("vip: taking VIPs soon after regaining quorum", "component", "vip", "vips", act.Acquire, "view", fmt.Sprintf("%+v", view.Nodes))
	}
	for _, name := range act.Acquire {
		if err := f.mech.Add(f.prefix(name)); err != nil {
			f.s.log.Warn("vip take failed", "component", "vip", "vip", name, "err", err)
			f.agent.Failed(name)
			continue
		}
		f.tickle(ctx, name)
	}
	for _, tr := range act.Transitions {
		f.log("vip state", "vip", tr.VIP, "from", tr.From, "to", tr.To, "reason", tr.Reason)
		f.notify.Notify(tr)
		f.mu.Lock()
		f.events = append(f.events, vipEvent{At: now, Transition: tr})
		if len(f.events) > 50 {
			f.events = f.events[len(f.events)-50:]
		}
		f.mu.Unlock()
	}
	self = f.agent.Self(healthy, inService, prio, now)
	row, _ := json.Marshal(vipRow{Healthy: self.Healthy, InService: self.InService, Priority: self.Priority,
		Preemptible: self.Preemptible, Holds: self.Holds})
	f.mu.Lock()
	changed := string(row) != string(f.lastRow)
	f.lastRow = row
	f.mu.Unlock()
	if changed {
		f.s.Store.Ephemeral(VIPTable).Put(me, row)
	}
}

// peerVIPRow is another node's row of VIPTable.
type peerVIPRow struct {
	Node string
	Row  vipRow
}

// seenRow is a node's VIP row as last seen, and when.
type seenRow struct {
	row vipRow
	at  time.Time
}

// rowGrace is how long a node's last VIP row stands for it after the row
// vanished while the membership still has the node alive (not suspect).
const rowGrace = 3 * time.Second

// rejoinSettle keeps a node that regained quorum from taking VIPs before it
// heard from the members that may hold them. A node cut off from the store
// (a false node loss: its cluster port cut while the gossip flowed) sees
// every peer's row vanish and loses quorum, while its peers take its VIPs
// over. When the cut heals, the peers' rows come back one by one: with the
// first, the node has quorum again but not yet the row of the new holder, so
// the VIP looked orphaned and it took the VIP back — on two nodes at once,
// then moved away from the clients that had just followed it.
type rejoinSettle struct {
	hadQuorum bool
	since     time.Time       // quorum regained
	lastView  map[string]bool // the members in view at the last step with quorum (settled)
	waitFor   map[string]bool // lastView when quorum was lost
	missed    bool            // some of waitFor had no row when quorum was regained
	logged    bool
}

// rejoinMin is how long at least a node that regained quorum without the rows
// of members it saw before waits before taking VIPs.
const rejoinMin = time.Second

// wait returns the members this node waits for (none: it may act): within
// rowGrace of regaining quorum, those that were in its view before it lost
// quorum, have not left and have no row in view yet — whatever the gossip
// says of them (under load it flaps, and a member it has failed for a moment
// may be the one holding the VIP). A member that had vanished already while
// the node still had quorum is not waited for: its VIPs were taken over then.
func (r *rejoinSettle) wait(v vip.View, quorumPolicy bool, members []discovery.Member, now time.Time) []string {
	visible := max(v.Visible, len(v.Nodes))
	quorum := !quorumPolicy || 2*visible > max(v.Known, visible)
	inView := map[string]bool{}
	for _, n := range v.Nodes {
		inView[n.Name] = true
	}
	if !quorum {
		r.hadQuorum, r.logged = false, false
		return nil
	}
	if !r.hadQuorum {
		r.hadQuorum, r.since, r.waitFor, r.missed = true, now, r.lastView, false
		for name := range r.waitFor {
			r.missed = r.missed || !inView[name]
		}
	}
	var out []string
	if r.missed && now.Sub(r.since) < rejoinMin {
		// A peer's first rows after a partition may be a copy taken before the
		// partition ended (its send waited on the dead connection), without
		// the VIP it took meanwhile; its later changes follow within moments.
		out = append(out, "(settling)")
	}
	if now.Sub(r.since) < rowGrace {
		left := map[string]bool{}
		for _, m := range members {
			if m.Status == discovery.StatusLeft {
				left[m.Name] = true
			}
		}
		for name := range r.waitFor {
			if !inView[name] && !left[name] {
				out = append(out, name)
			}
		}
		slices.Sort(out)
	}
	if len(out) == 0 {
		r.lastView = inView
	}
	return out
}

// buildVIPView is the allocator's view from this node's own row, the other
// nodes' VIP rows and the membership view. known (nodes ever seen with a VIP
// row) and seen (their last rows) are kept across calls and updated: a node
// that left (gracefully) is forgotten.
//
// A node's row vanishes when the store has not heard from it for its ephemeral
// timeout (1 s), which a loaded node's silence also causes; the gossip suspects
// and declares a node failed on its own schedule, before or after. While the
// gossip has the member alive (it answers probes), its last row stands for it
// (for at most rowGrace): a peer taking its VIPs as orphans put the VIP on two
// nodes and moved it back and forth under load. Once both say it is gone (no
// row, and suspect or failed) or the grace is over, a node that publishes VIP
// state and has no row is not live: counting it live with no row made an
// in-service survivor take the lost node's VIPs as orphans, with no stand-in,
// and keep them, so a spare never stood in. A member that never published a
// row (a witness) counts from the membership alone.
//
// silent (nil: none) tells which peers have stopped sending VIP adverts for
// their dead interval (vip.Adverts): a peer that holds VIPs in its row (or its
// stand-in) and is silent is not live either, whatever the gossip and the
// store say yet, so its VIPs are taken over within the dead interval.
func buildVIPView(self vip.Node, rows []peerVIPRow, members []discovery.Member, known map[string]bool, seen map[string]seenRow, now time.Time, silent func(string) bool) vip.View {
	status := map[string]discovery.Status{}
	for _, m := range members {
		status[m.Name] = m.Status
	}
	view := vip.View{Nodes: []vip.Node{self}}
	known[self.Name] = true
	hasRow := map[string]bool{self.Name: true}
	live := func(name string) bool {
		st, ok := status[name]
		return !ok || st == discovery.StatusAlive || st == discovery.StatusSuspect
	}
	for _, r := range rows {
		if r.Node != self.Name {
			hasRow[r.Node] = true
			seen[r.Node] = seenRow{row: r.Row, at: now}
		}
	}
	// Rows that vanished: the last one stands in while the member lives.
	for name, sr := range seen {
		if hasRow[name] {
			continue
		}
		if st, ok := status[name]; !ok || st != discovery.StatusAlive || now.Sub(sr.at) > rowGrace || sr.row.Leaving {
			delete(seen, name)
			continue
		}
		rows = append(rows, peerVIPRow{Node: name, Row: sr.row})
		hasRow[name] = true
	}
	down := map[string]bool{}
	for _, r := range rows {
		if r.Node == self.Name {
			continue
		}
		if r.Row.Leaving || status[r.Node] == discovery.StatusLeft {
			delete(known, r.Node)
			continue
		}
		known[r.Node] = true
		if !live(r.Node) {
			continue
		}
		if len(r.Row.Holds) > 0 && silent != nil && silent(r.Node) {
			down[r.Node] = true
			continue
		}
		view.Nodes = append(view.Nodes, vip.Node{Name: r.Node, Healthy: r.Row.Healthy, InService: r.Row.InService,
			Priority: r.Row.Priority, Preemptible: r.Row.Preemptible, Holds: r.Row.Holds})
	}
	knownSet, visible := map[string]bool{}, map[string]bool{}
	for n := range known {
		knownSet[n] = true
	}
	for _, n := range view.Nodes {
		visible[n.Name] = true
	}
	for _, m := range members {
		if m.Status != discovery.StatusLeft {
			knownSet[m.Name] = true
		}
		if (m.Status == discovery.StatusAlive || m.Status == discovery.StatusSuspect) && (hasRow[m.Name] || !known[m.Name]) && !down[m.Name] {
			visible[m.Name] = true // e.g. a witness that publishes no VIP state
		}
	}
	view.Known, view.Visible = len(knownSet), len(visible)
	return view
}

// publishTags keeps the membership tags (in-service flag and priority, which DNS
// publishing also reads) in step with the VIP settings and health.
func (f *vipFeature) publishTags(inService bool, prio int) {
	ins := 0
	if inService {
		ins = 1
	}
	f.mu.Lock()
	same := f.tags == [2]int{ins, prio}
	f.tags = [2]int{ins, prio}
	f.mu.Unlock()
	if same {
		return
	}
	_ = f.s.Membership().UpdateTags(func(t *discovery.Tags) {
		t.InService = inService && f.inService.Load()
		t.Priority = prio
	})
}

func (f *vipFeature) prefix(name string) netip.Prefix {
	for i, n := range f.names {
		if n == name {
			return f.pool[i]
		}
	}
	return netip.Prefix{}
}

// tickle sends tickle ACKs to the clients other nodes recorded on vip (the lost
// holder's connections), paced by the mechanics, in the background.
func (f *vipFeature) tickle(ctx context.Context, name string) {
	me := f.s.cfg.Node
	f.mu.Lock()
	var conns []netcfg.Conn
	for node, c := range f.conns[name] {
		if node != me && time.Since(c.seen) < time.Minute {
			conns = append(conns, c.conns...)
		}
	}
	f.mu.Unlock()
	if len(conns) == 0 {
		return
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		n, err := f.mech.Tickle(ctx, conns)
		f.mu.Lock()
		f.tickled[name] += n
		f.mu.Unlock()
		f.log("vip takeover: tickled the previous holder's clients", "vip", name, "connections", len(conns), "sent", n, "err", err)
	}()
}

// syncConns publishes this node's client connections per held VIP and caches every
// other node's.
func (f *vipFeature) syncConns(now time.Time) {
	me := f.s.cfg.Node
	held := f.agent.Held()
	var ports []uint16
	for _, a := range f.s.C2S.Addrs() {
		_, hp, _ := strings.Cut(a, " ")
		if ap, err := netip.ParseAddrPort(hp); err == nil {
			ports = append(ports, ap.Port())
		} else if _, p, err := net.SplitHostPort(hp); err == nil {
			var n uint16
			fmt.Sscan(p, &n)
			ports = append(ports, n)
		}
	}
	var addrs []netip.Addr
	for _, h := range held {
		addrs = append(addrs, f.prefix(h).Addr())
	}
	var mine []netcfg.Conn
	if len(addrs) > 0 {
		var err error
		if mine, err = netcfg.TCPConnections(addrs, ports); err != nil {
			f.s.log.Warn("vip: listing client connections", "component", "vip", "err", err)
		}
	}
	eph := f.s.Store.Ephemeral(VIPConnTable)
	for _, name := range f.names {
		addr := f.prefix(name).Addr()
		var cs []netcfg.Conn
		for _, c := range mine {
			if c.Local.Addr() == addr {
				cs = append(cs, c)
			}
		}
		b, _ := json.Marshal(cs)
		f.mu.Lock()
		prev, had := f.lastConns[name]
		f.lastConns[name] = string(b)
		f.mu.Unlock()
		switch {
		case !slices.Contains(held, name) || len(cs) == 0:
			if had && prev != "null" {
				eph.Delete(name)
				f.mu.Lock()
				f.lastConns[name] = "null"
				f.mu.Unlock()
			}
		case prev != string(b):
			eph.Put(name, b)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	eph.Scan("", func(r storage.Row) bool {
		if r.Node == me {
			return true
		}
		var cs []netcfg.Conn
		if json.Unmarshal(r.Value, &cs) == nil {
			if f.conns[r.Key] == nil {
				f.conns[r.Key] = map[string]connCache{}
			}
			f.conns[r.Key][r.Node] = connCache{conns: cs, seen: now}
		}
		return true
	})
}

func (f *vipFeature) onConflict(ip netip.Addr, from net.HardwareAddr) {
	if f.adverts != nil {
		// Whoever announces a VIP is alive: a holder found silent by mistake
		// answers the takeover with its own announcement and is in the view
		// again at the next step (the best-ranked claimant keeps the VIP).
		if node := f.adverts.HeardFrom(from, time.Now()); node != "" {
			f.log("vip conflict: the other announcer is a node heard before", "node", node)
			select {
			case f.advertKick <- struct{}{}:
			default:
			}
		}
	}
	for i, p := range f.pool {
		if p.Addr() != ip {
			continue
		}
		name := f.names[i]
		if f.agent.Conflict(name) {
			f.log("vip conflict: re-announcing (this node is the holder)", "vip", name, "other", from.String())
			_ = f.mech.Announce(ip)
			return
		}
		f.log("vip conflict: withdrawing (another node holds it)", "vip", name, "other", from.String())
		if err := f.mech.Remove(p); err != nil {
			f.s.log.Warn("vip withdraw failed", "component", "vip", "vip", name, "err", err)
		}
	}
}

// VIPView is `xmppctl vip`.
type VIPView struct {
	Node       string            `json:"node"`
	Interface  string            `json:"interface,omitempty"`
	Configured bool              `json:"configured"`
	Quorum     bool              `json:"quorum"`
	Note       string            `json:"note,omitempty"`
	Priority   int               `json:"priority"`
	Healthy    bool              `json:"healthy"`
	InService  bool              `json:"in_service"`
	Preempt    bool              `json:"preempt"`
	VIPs       []VIPLine         `json:"vips"`
	Tracks     []vip.TrackStatus `json:"tracks,omitempty"`
	Nodes      []vip.Node        `json:"nodes,omitempty"`
	Known      int               `json:"known"`
	Events     []vipEvent        `json:"events,omitempty"`
	// Adverts: the peers' VIP adverts as heard here; OwnAdverts this node's own
	// (a max gap near a peer's dead interval is a false failover in the making);
	// Stalls counts this node's own loop stalls.
	Adverts    []AdvertLine `json:"adverts,omitempty"`
	OwnAdverts *AdvertLine  `json:"own_adverts,omitempty"`
	Stalls     int          `json:"stalls,omitempty"`
}

// AdvertLine is one node's VIP adverts in `xmppctl vip`: a peer's as heard
// here, or this node's own (sent); durations rounded to the millisecond.
type AdvertLine struct {
	Node     string `json:"node"`
	Interval string `json:"interval"`
	Dead     string `json:"dead_interval,omitempty"`
	LastAgo  string `json:"last_ago,omitempty"`
	Count    uint64 `json:"count"`
	Missed   uint64 `json:"missed,omitempty"`
	MaxGap   string `json:"max_gap"`
	Silent   bool   `json:"silent,omitempty"`
	Silences int    `json:"silences,omitempty"`
}

// VIPLine is one VIP in `xmppctl vip`.
type VIPLine struct {
	vip.VIPStatus
	HeldSince time.Time `json:"held_since,omitzero"`
	Tickled   int       `json:"tickled,omitempty"`
}

func (f *vipFeature) status() VIPView {
	v := VIPView{Node: f.s.cfg.Node, Interface: f.cfg.Interface, Configured: len(f.pool) > 0, Preempt: f.cfg.Preempt, VIPs: []VIPLine{}}
	if f.agent == nil {
		v.Note = "no VIPs configured (--vip)"
		return v
	}
	v.Priority, v.Healthy = f.health.Effective()
	v.InService = f.inService.Load() && !f.localMember().Tags.Draining
	plan := f.agent.Plan()
	v.Quorum, v.Note = plan.HasQuorum, plan.Note
	held := map[string]time.Time{}
	if f.mech != nil {
		for _, h := range f.mech.Held() {
			held[h.Prefix.String()] = h.Since
		}
	}
	f.mu.Lock()
	for _, st := range f.agent.Status() {
		v.VIPs = append(v.VIPs, VIPLine{VIPStatus: st, HeldSince: held[st.VIP], Tickled: f.tickled[st.VIP]})
	}
	v.Nodes = slices.Clone(f.view)
	v.Known = f.knownN
	v.Events = slices.Clone(f.events)
	v.Stalls = f.stalls
	f.mu.Unlock()
	if f.adverts != nil {
		ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
		for _, a := range f.adverts.Status(time.Now()) {
			v.Adverts = append(v.Adverts, AdvertLine{Node: a.Node, Interval: ms(a.Interval), Dead: ms(a.Dead), LastAgo: ms(a.Ago),
				Count: a.Count, Missed: a.Missed, MaxGap: ms(a.MaxGap), Silent: a.Silent, Silences: a.Silences})
		}
		if f.mech != nil {
			own := f.mech.Adverts()
			v.OwnAdverts = &AdvertLine{Node: f.s.cfg.Node, Interval: ms(f.cfg.AdvertInterval), Count: own.Sent, Missed: own.Errors, MaxGap: ms(own.MaxGap)}
		}
	}
	v.Tracks = f.health.Tracks()
	return v
}
