package discovery

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"xedge/internal/backoff"
	"xedge/netcfg"
)

// Failure-detection tuning (DESIGN decision 8): serf's LAN defaults declare a
// dead node after ~5–6 s in a 3-node cluster; these declare it in about 1 s.
// Probe every 200 ms with a 100 ms direct timeout; suspicion lasts
// SuspicionMult × ProbeInterval (memberlist scales it with log10(n) above 10
// nodes); gossip every 100 ms so suspect/dead messages spread within a round.
const (
	DefaultProbeInterval  = 200 * time.Millisecond
	DefaultProbeTimeout   = 100 * time.Millisecond
	DefaultGossipInterval = 100 * time.Millisecond
	DefaultSuspicionMult  = 3
	// DefaultTagPushInterval bounds how often tag changes are gossiped.
	DefaultTagPushInterval = time.Second
)

// Config configures an Agent.
type Config struct {
	NodeName      string
	BindAddr      netip.AddrPort // gossip listener (UDP and TCP)
	AdvertiseAddr netip.AddrPort // address peers reach; zero: BindAddr
	ClusterKey    []byte         // the cluster key; the gossip key is derived from it
	Tags          Tags           // initial tags of this node
	SnapshotPath  string         // serf snapshot (rejoin previous peers after a restart); empty: none
	Logger        *slog.Logger

	Seeds      []string         // static gossip seeds host:port
	SRVDomain  string           // DNS SRV seeds: _xedge-cluster._tcp.<SRVDomain>; empty: none
	DNSServers []netip.AddrPort // for SRV and PTR lookups; empty: /etc/resolv.conf
	ReverseDNS bool             // name non-loopback members by PTR

	Scan         bool           // subnet scan for the gossip port
	ScanPrefixes []netip.Prefix // default: LocalPrefixes()
	ScanRate     int            // probes per second (default DefaultScanRate)
	ScanMaxBits  int            // widest subnet scanned (default /22)
	ScanPasses   int            // passes while alone (default 3)
	ClusterPort  uint16         // when a pass finds no gossip port, hosts answering on this port are named in the log (0: no check)

	// Tuning; zero takes the defaults above.
	ProbeInterval   time.Duration
	ProbeTimeout    time.Duration
	GossipInterval  time.Duration
	SuspicionMult   int
	TagPushInterval time.Duration
	SeedRetry       time.Duration // first retry of unreachable seeds while alone (default 1s, backoff to 30s)
}

// Agent is this node's Serf membership: it implements View, joins seeds, DNS SRV
// seeds and what the subnet scan finds, and names members by reverse DNS.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	glog *gossipLog
	key  []byte

	mu         sync.Mutex
	pushMu     sync.Mutex
	serf       *serf.Serf
	tags       Tags
	pushed     map[string]string
	pushKick   chan struct{}
	state      map[string]*memberState // by name: what this node adds to serf's view
	foundBy    map[netip.Addr]string
	started    time.Time
	scanDone   chan struct{}
	stopped    bool
	subs       notifier
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	keyRefused []string // senders refused for a wrong key
	ptrCh      chan ptrReq
	wrongKey   []string // peers (host:port) that refused this node's join for a wrong key
}

type memberState struct {
	status  Status
	since   time.Time
	addr    netip.AddrPort
	dns     string
	foundBy string
}

// New checks cfg and builds an Agent; it does no I/O (Start does).
func New(cfg Config) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("discovery: no node name")
	}
	if !cfg.BindAddr.IsValid() {
		return nil, errors.New("discovery: no gossip bind address")
	}
	if !cfg.AdvertiseAddr.IsValid() {
		cfg.AdvertiseAddr = cfg.BindAddr
	}
	if cfg.AdvertiseAddr.Addr().IsUnspecified() {
		return nil, fmt.Errorf("discovery: gossip advertise address %s: must be an address peers can reach", cfg.AdvertiseAddr)
	}
	key, err := GossipKey(cfg.ClusterKey)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.ProbeInterval, DefaultProbeInterval)
	def(&cfg.ProbeTimeout, DefaultProbeTimeout)
	def(&cfg.GossipInterval, DefaultGossipInterval)
	def(&cfg.TagPushInterval, DefaultTagPushInterval)
	def(&cfg.SeedRetry, time.Second)
	if cfg.SuspicionMult <= 0 {
		cfg.SuspicionMult = DefaultSuspicionMult
	}
	if cfg.ScanPasses <= 0 {
		cfg.ScanPasses = 3
	}
	l := cfg.Logger.With("component", "discovery")
	a := &Agent{cfg: cfg, log: l, key: key, tags: cfg.Tags, state: map[string]*memberState{},
		foundBy: map[netip.Addr]string{}, pushKick: make(chan struct{}, 1), ptrCh: make(chan ptrReq, 256), scanDone: make(chan struct{})}
	a.glog = &gossipLog{log: cfg.Logger, onKey: func(from string) {
		a.mu.Lock()
		a.keyRefused = append(a.keyRefused, from)
		a.mu.Unlock()
	}}
	if a.tags.Role == "" {
		a.tags.Role = RoleNode
	}
	if n := len(encodedSize(a.tags.Encode())); n > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("discovery: tags take %d bytes, serf allows %d", n, memberlist.MetaMaxSize)
	}
	return a, nil
}

func encodedSize(m map[string]string) []byte {
	var b []byte
	for k, v := range m {
		b = append(b, k...)
		b = append(b, v...)
		b = append(b, 0, 0, 0)
	}
	return b
}

// Start binds the gossip port and starts joining seeds, DNS seeds and the scan
// in the background. A bind failure names the address.
func (a *Agent) Start(ctx context.Context) error {
	a.mu.Lock()
	if a.serf != nil || a.stopped {
		a.mu.Unlock()
		return errors.New("discovery: already started")
	}
	a.mu.Unlock()
	events := make(chan serf.Event, 256)
	sc := serf.DefaultConfig()
	sc.NodeName = a.cfg.NodeName
	sc.Tags = a.tags.Encode()
	sc.EventCh = events
	sc.SnapshotPath = a.cfg.SnapshotPath
	sc.RejoinAfterLeave = true
	sc.ReconnectInterval = 2 * time.Second
	sc.ReapInterval = 5 * time.Second
	sc.LeavePropagateDelay = max(500*time.Millisecond, 5*a.cfg.GossipInterval)
	sc.BroadcastTimeout = 2 * time.Second
	sc.EnableNameConflictResolution = true
	stdlog := log.New(a.glog, "", 0)
	sc.Logger = stdlog
	mc := memberlist.DefaultLANConfig()
	mc.Logger = stdlog
	mc.BindAddr = a.cfg.BindAddr.Addr().String()
	mc.BindPort = int(a.cfg.BindAddr.Port())
	mc.AdvertiseAddr = a.cfg.AdvertiseAddr.Addr().String()
	mc.AdvertisePort = int(a.cfg.AdvertiseAddr.Port())
	mc.ProbeInterval = a.cfg.ProbeInterval
	mc.ProbeTimeout = a.cfg.ProbeTimeout
	mc.GossipInterval = a.cfg.GossipInterval
	mc.SuspicionMult = a.cfg.SuspicionMult
	// Every broadcast (serf's leave intent among them) goes out twice as often as
	// memberlist's LAN default: gossip also goes to members dead for less than
	// GossipToTheDeadTime, so right after a kill most of a small pool's gossip
	// targets are dead, and with 4 transmissions a live peer missed the leave
	// intent of a graceful stop about once in ten (it then saw the node failed,
	// not left: TestAgentsFormTagsAndFailureDetection, 3 of 32 runs under load;
	// none of 48 with 8).
	mc.RetransmitMult = 8
	mc.SuspicionMaxTimeoutMult = 2
	mc.TCPTimeout = 2 * time.Second
	mc.PushPullInterval = 15 * time.Second
	kr, err := memberlist.NewKeyring(nil, a.key)
	if err != nil {
		return fmt.Errorf("discovery: keyring: %w", err)
	}
	mc.Keyring = kr
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: stdlog})
	if err != nil {
		return fmt.Errorf("discovery: start gossip on %s (TCP and UDP): %s", a.cfg.BindAddr, oneLine(err.Error()))
	}
	mc.Transport = &boundTransport{NetTransport: nt, local: a.cfg.BindAddr.Addr()}
	sc.MemberlistConfig = mc
	// The static seeds are found by "seed" from the start: one may join this
	// node before the seed loop dials it (the loop can be held up by a DNS SRV
	// lookup, or just not have run yet on a loaded host).
	for _, seed := range a.cfg.Seeds {
		a.markFound(seed, "seed")
	}
	s, err := serf.Create(sc)
	if err != nil {
		_ = nt.Shutdown()
		return fmt.Errorf("discovery: start gossip on %s: %s", a.cfg.BindAddr, oneLine(err.Error()))
	}
	lctx, cancel := context.WithCancel(context.Background())
	a.mu.Lock()
	a.serf, a.cancel, a.started = s, cancel, time.Now()
	a.pushed = sc.Tags
	self := &memberState{status: StatusAlive, since: time.Now(), addr: a.cfg.AdvertiseAddr, foundBy: "self"}
	a.state[a.cfg.NodeName] = self
	a.mu.Unlock()
	a.log.Info("gossip started", "node", a.cfg.NodeName, "bind", a.cfg.BindAddr.String(), "advertise", a.cfg.AdvertiseAddr.String(),
		"seeds", a.cfg.Seeds, "srv_domain", a.cfg.SRVDomain, "scan", a.cfg.Scan,
		"probe_interval", a.cfg.ProbeInterval, "suspicion_mult", a.cfg.SuspicionMult)
	a.lookupName(lctx, a.cfg.NodeName, a.cfg.AdvertiseAddr)
	a.wg.Add(5)
	go func() { defer a.wg.Done(); a.ptrLoop(lctx) }()
	go func() { defer a.wg.Done(); a.eventLoop(lctx, events) }()
	go func() { defer a.wg.Done(); a.pushLoop(lctx) }()
	go func() { defer a.wg.Done(); a.seedLoop(lctx) }()
	go func() { defer a.wg.Done(); a.scanLoop(lctx) }()
	return nil
}

// Stop leaves the gossip pool (peers see "left", not "failed") and shuts down;
// safe to call more than once.
func (a *Agent) Stop(ctx context.Context) error {
	s := a.markStopped()
	if s == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- s.Leave() }()
	var lerr error
	select {
	case lerr = <-done:
	case <-ctx.Done():
		lerr = ctx.Err()
	case <-time.After(5 * time.Second):
		lerr = errors.New("timed out")
	}
	if lerr != nil {
		a.log.Warn("leaving the gossip pool failed; shutting down anyway", "err", lerr)
	}
	err := s.Shutdown()
	a.wg.Wait()
	if err != nil {
		return fmt.Errorf("discovery: shutdown: %w", err)
	}
	a.log.Info("left the gossip pool")
	return nil
}

// Shutdown stops without leaving (peers detect a failure): tests of failure
// detection, and a process that must not announce a graceful leave.
func (a *Agent) Shutdown() error {
	s := a.markStopped()
	if s == nil {
		return nil
	}
	err := s.Shutdown()
	a.wg.Wait()
	return err
}

// markStopped marks the agent stopped and ends its loops; it returns the serf
// instance to leave or shut down, nil if there is none or it was stopped before.
func (a *Agent) markStopped() *serf.Serf {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return nil
	}
	a.stopped = true
	if a.cancel != nil {
		a.cancel()
	}
	return a.serf
}

// Started returns when Start ran (zero before).
func (a *Agent) Started() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.started
}

// ScanDone is closed when the subnet scan has finished its first pass (at once
// when the scan is off).
func (a *Agent) ScanDone() <-chan struct{} { return a.scanDone }

// KeyRefused lists the senders whose gossip was refused for a wrong key.
func (a *Agent) KeyRefused() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.keyRefused...)
}

// WrongKeyPeers returns the peers (host:port) that refused this node's join
// for a wrong cluster key.
func (a *Agent) WrongKeyPeers() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.wrongKey...)
}

// ErrWrongKey marks a join refused because the peer uses another cluster key.
var ErrWrongKey = errors.New("wrong cluster key")

// JoinError says which seed failed and why.
type JoinError struct {
	Addr string // host:port tried
	Why  string // one line: what failed (address, port or key)
	Err  error
}

func (e *JoinError) Error() string { return "cannot join gossip peer " + e.Addr + ": " + e.Why }
func (e *JoinError) Unwrap() error { return e.Err }

// Join joins the gossip pool through each of addrs (host:port); found says how
// they were found (seed, dns, scan) for the membership view. It returns how many
// answered and one JoinError per seed that did not.
func (a *Agent) Join(addrs []string, found string) (int, error) {
	a.mu.Lock()
	s := a.serf
	a.mu.Unlock()
	if s == nil {
		return 0, errors.New("discovery: not started")
	}
	n := 0
	var errs []error
	for _, addr := range addrs { // all first: a seed may reach us before we dial it
		a.markFound(addr, found)
	}
	for _, addr := range addrs {
		if ap, err := netip.ParseAddrPort(addr); err == nil && (ap == a.cfg.AdvertiseAddr || ap == a.cfg.BindAddr) {
			continue // ourselves
		}
		k, err := s.Join([]string{addr}, true)
		if err == nil && k > 0 {
			n += k
			continue
		}
		je := explainJoin(addr, err)
		if errors.Is(je, ErrWrongKey) {
			a.mu.Lock()
			if !slices.Contains(a.wrongKey, addr) {
				a.wrongKey = append(a.wrongKey, addr)
			}
			a.mu.Unlock()
		}
		errs = append(errs, je)
	}
	return n, errors.Join(errs...)
}

// explainJoin turns memberlist's join error into one line naming the address,
// and whether the port, the host or the key failed.
func explainJoin(addr string, err error) *JoinError {
	if err == nil {
		return &JoinError{Addr: addr, Why: "no node answered"}
	}
	text := oneLine(err.Error())
	je := &JoinError{Addr: addr, Err: err}
	var ne net.Error
	switch {
	case IsKeyError(text):
		je.Why, je.Err = "wrong cluster key: its gossip cannot be decrypted with this node's key (give every node the same --cluster-key-file)", fmt.Errorf("%w: %s", ErrWrongKey, text)
	case strings.Contains(text, "connection refused"):
		_, port, _ := net.SplitHostPort(addr)
		je.Why = "connection refused: nothing listens on port " + port + " there (is xmppd running on that host, with this gossip port?)"
	case errors.As(err, &ne) && ne.Timeout(), strings.Contains(text, "i/o timeout"):
		je.Why = "no answer (timeout): the host is down or the port is filtered"
	case strings.Contains(text, "no route to host"), strings.Contains(text, "network is unreachable"):
		je.Why = "address unreachable: " + text
	case strings.Contains(text, "no such host"), strings.Contains(text, "failed to resolve"):
		je.Why = "host name does not resolve: " + text
	default:
		je.Why = text
	}
	return je
}

// Local implements View.
func (a *Agent) Local() Member {
	for _, m := range a.Members() {
		if m.Name == a.cfg.NodeName {
			return m
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return Member{Name: a.cfg.NodeName, Addr: a.cfg.AdvertiseAddr, Status: StatusAlive, Tags: a.tags, FoundBy: "self"}
}

// Members implements View.
func (a *Agent) Members() []Member {
	a.mu.Lock()
	s := a.serf
	if s == nil {
		defer a.mu.Unlock()
		return []Member{{Name: a.cfg.NodeName, Addr: a.cfg.AdvertiseAddr, Status: StatusAlive, Tags: a.tags, FoundBy: "self"}}
	}
	a.mu.Unlock()
	suspect := map[string]bool{}
	for _, n := range s.Memberlist().Members() {
		if n.State == memberlist.StateSuspect {
			suspect[n.Name] = true
		}
	}
	sms := s.Members()
	out := make([]Member, 0, len(sms))
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, sm := range sms {
		m := Member{Name: sm.Name, Tags: DecodeTags(sm.Tags)}
		if ip, ok := netip.AddrFromSlice(sm.Addr); ok {
			m.Addr = netip.AddrPortFrom(ip.Unmap(), sm.Port)
		}
		switch sm.Status {
		case serf.StatusAlive:
			m.Status = StatusAlive
			if suspect[sm.Name] {
				m.Status = StatusSuspect
			}
		case serf.StatusFailed:
			m.Status = StatusFailed
		case serf.StatusLeaving, serf.StatusLeft:
			m.Status = StatusLeft
		default:
			continue
		}
		if sm.Name == a.cfg.NodeName {
			m.Tags = a.tags // the freshest, even before the push
		}
		st := a.state[sm.Name]
		if st == nil || st.addr != m.Addr {
			old := st
			st = a.newState(m.Addr, m.Status)
			if old != nil && old.addr.Addr() == m.Addr.Addr() {
				st.dns = old.dns
			}
			a.state[sm.Name] = st
		}
		if st.status != m.Status {
			st.status, st.since = m.Status, time.Now()
		}
		m.Since, m.DNSName, m.FoundBy = st.since, st.dns, st.foundBy
		out = append(out, m)
	}
	SortMembers(out)
	return out
}

// newState starts this node's record of a member at addr (a.mu held).
func (a *Agent) newState(addr netip.AddrPort, status Status) *memberState {
	st := &memberState{since: time.Now(), addr: addr, status: status, foundBy: a.foundBy[addr.Addr()]}
	if st.foundBy == "" {
		st.foundBy = "gossip"
	}
	return st
}

// Subscribe implements View.
func (a *Agent) Subscribe() (<-chan struct{}, func()) { return a.subs.subscribe() }

// SetTags implements View.
func (a *Agent) SetTags(t Tags) error { return a.UpdateTags(func(old *Tags) { *old = t }) }

// UpdateTags implements View: the change is local at once and gossiped within
// TagPushInterval (Cluster changes at once).
func (a *Agent) UpdateTags(f func(*Tags)) error {
	if f == nil {
		return errors.New("discovery: UpdateTags: nil function")
	}
	a.mu.Lock()
	old := a.tags
	f(&a.tags)
	if n := len(encodedSize(a.tags.Encode())); n > memberlist.MetaMaxSize {
		a.tags = old
		a.mu.Unlock()
		return fmt.Errorf("discovery: tags take %d bytes, serf allows %d", n, memberlist.MetaMaxSize)
	}
	urgent := old.Cluster != a.tags.Cluster || old.Draining != a.tags.Draining || old.InService != a.tags.InService
	a.mu.Unlock()
	if old != a.tags {
		a.subs.notify()
	}
	if urgent {
		return a.pushTags()
	}
	select {
	case a.pushKick <- struct{}{}:
	default:
	}
	return nil
}

// pushTags gossips the local tags if they changed since the last push.
func (a *Agent) pushTags() error {
	a.pushMu.Lock() // one push at a time: an older snapshot never overwrites a newer one
	defer a.pushMu.Unlock()
	a.mu.Lock()
	s := a.serf
	enc := a.tags.Encode()
	same := mapsEqual(enc, a.pushed)
	a.mu.Unlock()
	if s == nil || same {
		return nil
	}
	if err := s.SetTags(enc); err != nil {
		return fmt.Errorf("discovery: gossip tags: %w", err)
	}
	a.mu.Lock()
	a.pushed = enc
	a.mu.Unlock()
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (a *Agent) pushLoop(ctx context.Context) {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.pushKick:
		}
		if wait := a.cfg.TagPushInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		if err := a.pushTags(); err != nil && ctx.Err() == nil {
			a.log.Warn("cannot gossip tag change", "err", err)
		}
	}
}

// eventLoop logs membership changes, looks up reverse names, and notifies
// subscribers; it also polls for suspect transitions (memberlist does not
// report them as events).
func (a *Agent) eventLoop(ctx context.Context, events <-chan serf.Event) {
	t := time.NewTicker(a.cfg.ProbeInterval)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			if me, ok := ev.(serf.MemberEvent); ok {
				for _, m := range me.Members {
					a.logEvent(ctx, me.Type, m)
				}
			}
		case <-t.C:
		}
		ms := a.Members()
		fp := fingerprint(ms)
		if fp != last {
			last = fp
			a.subs.notify()
		}
	}
}

func fingerprint(ms []Member) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s|%s|%s|%s|%v;", m.Name, m.Addr, m.Status, m.DNSName, m.Tags)
	}
	return b.String()
}

func (a *Agent) logEvent(ctx context.Context, typ serf.EventType, m serf.Member) {
	ip, _ := netip.AddrFromSlice(m.Addr)
	addr := netip.AddrPortFrom(ip.Unmap(), m.Port)
	if m.Name == a.cfg.NodeName {
		return
	}
	switch typ {
	case serf.EventMemberJoin:
		a.mu.Lock()
		fb := a.foundBy[addr.Addr()]
		a.mu.Unlock()
		if fb == "" {
			fb = "gossip"
		}
		a.log.Info("member joined", "member", m.Name, "addr", addr.String(), "found_by", fb, "role", m.Tags[tagRole], "cluster_addr", m.Tags[tagCluster])
		a.lookupName(ctx, m.Name, addr)
	case serf.EventMemberFailed:
		a.log.Warn("member failed (no answer to probes)", "member", m.Name, "addr", addr.String())
	case serf.EventMemberLeave:
		a.log.Info("member left", "member", m.Name, "addr", addr.String())
	case serf.EventMemberReap:
		a.log.Info("member reaped", "member", m.Name, "addr", addr.String())
	case serf.EventMemberUpdate:
		a.log.Debug("member tags changed", "member", m.Name, "tags", m.Tags)
	}
}

// ptrReq asks the reverse-DNS worker for a member's PTR name.
type ptrReq struct {
	name    string
	addr    netip.AddrPort
	attempt int
}

// ptrAttempts bounds the lookups of one address (1 s, 2 s, 4 s apart) when the
// server does not answer; a missing PTR record is not retried.
const ptrAttempts = 4

// lookupName queues a PTR lookup of a member's address.
func (a *Agent) lookupName(ctx context.Context, name string, addr netip.AddrPort) {
	if !a.cfg.ReverseDNS || addr.Addr().IsLoopback() || !addr.Addr().IsValid() || len(a.dnsServers()) == 0 {
		return
	}
	a.queuePTR(ctx, ptrReq{name: name, addr: addr})
}

func (a *Agent) queuePTR(ctx context.Context, r ptrReq) {
	select {
	case a.ptrCh <- r:
	case <-ctx.Done():
	default:
		a.log.Warn("reverse DNS queue full; member stays unnamed", "member", r.name, "addr", r.addr.Addr().String())
	}
}

// ptrLoop looks up PTR names one at a time (a booting cluster does not burst
// queries at the DNS server) and retries a lookup that timed out.
func (a *Agent) ptrLoop(ctx context.Context) {
	for {
		var r ptrReq
		select {
		case <-ctx.Done():
			return
		case r = <-a.ptrCh:
		}
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ptr, err := reverse(lctx, r.addr.Addr(), a.dnsServers())
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var de *net.DNSError
			notFound := errors.As(err, &de) && de.IsNotFound
			r.attempt++
			if notFound || r.attempt >= ptrAttempts {
				a.log.Info("no reverse DNS name for member", "member", r.name, "addr", r.addr.Addr().String(), "err", oneLine(err.Error()))
				continue
			}
			a.log.Debug("reverse DNS lookup failed (retrying)", "member", r.name, "addr", r.addr.Addr().String(), "err", oneLine(err.Error()))
			a.wg.Add(1)
			go func(r ptrReq) {
				defer a.wg.Done()
				if backoff.Sleep(ctx, backoff.Delay(time.Second, time.Minute, r.attempt-1)) == nil {
					a.queuePTR(ctx, r)
				}
			}(r)
			continue
		}
		a.mu.Lock()
		if st := a.state[r.name]; st != nil && st.addr.Addr() == r.addr.Addr() {
			st.dns = ptr
		} else {
			st := a.newState(r.addr, "")
			st.dns = ptr
			a.state[r.name] = st
		}
		a.mu.Unlock()
		a.log.Info("member named by reverse DNS", "member", r.name, "addr", r.addr.Addr().String(), "dns_name", ptr)
		a.subs.notify()
	}
}

func (a *Agent) dnsServers() []netip.AddrPort {
	if len(a.cfg.DNSServers) > 0 {
		return a.cfg.DNSServers
	}
	return SystemServers()
}

// reverse asks servers (their port 53 through netcfg, other ports directly).
func reverse(ctx context.Context, addr netip.Addr, servers []netip.AddrPort) (string, error) {
	std := true
	var ips []netip.Addr
	for _, s := range servers {
		std = std && s.Port() == 53
		ips = append(ips, s.Addr())
	}
	if std {
		return netcfg.ReverseName(ctx, addr, ips)
	}
	names, err := resolver(servers).LookupAddr(ctx, addr.String())
	if err != nil {
		return "", err
	}
	if len(names) == 0 {
		return "", errors.New("no PTR record")
	}
	return strings.TrimSuffix(names[0], "."), nil
}

// alone reports whether no other member is alive.
func (a *Agent) alone() bool {
	for _, m := range a.Members() {
		if m.Name != a.cfg.NodeName && m.Status == StatusAlive {
			return false
		}
	}
	return true
}

// seedLoop joins the static and DNS SRV seeds; while this node is alone it
// retries with backoff (1 s doubling to 30 s), logging each failed seed once
// per distinct error.
func (a *Agent) seedLoop(ctx context.Context) {
	if len(a.cfg.Seeds) == 0 && a.cfg.SRVDomain == "" {
		return
	}
	bo := backoff.Backoff{Min: a.cfg.SeedRetry, Max: max(a.cfg.SeedRetry, 30*time.Second)}
	logged := map[string]string{}
	for attempt := 0; ; attempt++ {
		if attempt == 0 || a.alone() {
			seeds := append([]string(nil), a.cfg.Seeds...)
			if a.cfg.SRVDomain != "" {
				found, err := LookupSRVSeeds(ctx, a.cfg.SRVDomain, a.dnsServers())
				if err != nil {
					if logged["srv"] != err.Error() {
						logged["srv"] = err.Error()
						a.log.Warn("DNS SRV seeds: lookup failed (retrying)", "err", oneLine(err.Error()))
					}
				} else {
					if logged["srv"] != strings.Join(found, ",") {
						logged["srv"] = strings.Join(found, ",")
						a.log.Info("DNS SRV seeds", "name", SRVService+a.cfg.SRVDomain, "seeds", found)
					}
					for _, f := range found {
						a.markFound(f, "dns")
					}
					seeds = append(seeds, found...)
				}
			}
			n, err := a.Join(seeds, "seed")
			if n > 0 {
				a.log.Info("joined the gossip pool", "through", n, "seeds", seeds)
			}
			var je *JoinError
			for _, e := range unwrapAll(err) {
				if errors.As(e, &je) && logged[je.Addr] != je.Why {
					logged[je.Addr] = je.Why
					a.log.Warn(je.Error(), "seed", je.Addr)
				}
			}
		}
		if bo.Wait(ctx) != nil {
			return
		}
	}
}

func (a *Agent) markFound(hostport, how string) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		a.mu.Lock()
		if _, ok := a.foundBy[ap.Addr()]; !ok {
			a.foundBy[ap.Addr()] = how
		}
		a.mu.Unlock()
	}
}

func unwrapAll(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// scanLoop runs the subnet scan: a first pass at start, then up to ScanPasses-1
// more while this node is still alone (10 s, 20 s, ... apart). Every host whose
// gossip port answers is joined.
func (a *Agent) scanLoop(ctx context.Context) {
	defer func() {
		select {
		case <-a.scanDone:
		default:
			close(a.scanDone)
		}
	}()
	if !a.cfg.Scan {
		return
	}
	prefixes := a.cfg.ScanPrefixes
	if len(prefixes) == 0 {
		var err error
		if prefixes, err = LocalPrefixes(); err != nil || len(prefixes) == 0 {
			a.log.Warn("subnet scan: no IPv4 subnet on an up, non-loopback interface", "err", err)
			return
		}
	}
	sc := &Scanner{Prefixes: prefixes, Port: a.cfg.AdvertiseAddr.Port(), Rate: a.cfg.ScanRate, MaxBits: a.cfg.ScanMaxBits}
	// No cap needed: ScanPasses bounds the doublings (the hour is a guard).
	pause := backoff.Backoff{Min: 10 * time.Second, Max: time.Hour}
	for pass := 1; pass <= a.cfg.ScanPasses; pass++ {
		start := time.Now()
		a.log.Info("subnet scan", "pass", pass, "subnets", fmt.Sprint(prefixes), "port", sc.Port, "rate_per_s", cmpOr(sc.Rate, DefaultScanRate))
		res, err := sc.Run(ctx, func(ap netip.AddrPort) {
			if ap == a.cfg.AdvertiseAddr {
				return
			}
			a.markFound(ap.String(), "scan")
			a.log.Info("subnet scan found a gossip port", "addr", ap.String())
			if _, err := a.Join([]string{ap.String()}, "scan"); err != nil {
				a.log.Warn(oneLine(err.Error()), "addr", ap.String())
			}
		})
		if err != nil {
			return
		}
		a.log.Info("subnet scan done", "pass", pass, "probed", res.Probed, "found", len(res.Found), "took", time.Since(start).Round(time.Millisecond))
		if pass == 1 {
			close(a.scanDone)
			if len(res.Found) == 0 {
				a.diagnoseClusterPort(ctx, sc)
			}
		}
		if pass == a.cfg.ScanPasses || !a.alone() {
			return
		}
		if pause.Wait(ctx) != nil {
			return
		}
	}
}

// diagnoseClusterPort runs after a scan pass that found no gossip port: it
// probes the cluster port once over the same hosts and names every host that
// answers there, since such a host runs xmppd that cannot be joined by gossip
// (discovery off, or another gossip port): the operator learns which address
// and which port to look at.
func (a *Agent) diagnoseClusterPort(ctx context.Context, sc *Scanner) {
	if a.cfg.ClusterPort == 0 || a.cfg.ClusterPort == sc.Port {
		return
	}
	d := *sc
	d.Port = a.cfg.ClusterPort
	_, _ = d.Run(ctx, func(ap netip.AddrPort) {
		if ap.Addr() == a.cfg.AdvertiseAddr.Addr() {
			return
		}
		a.log.Warn("subnet scan: "+ap.Addr().String()+" answers on the cluster port "+strconv.Itoa(int(d.Port))+" but not on the gossip port "+
			strconv.Itoa(int(sc.Port))+": an xmppd with discovery off (--discover none) or another gossip port; give it the same gossip port, or join it with --join/--seeds",
			"addr", ap.String())
	})
}

func cmpOr(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

var _ View = (*Agent)(nil)

// boundTransport is memberlist's TCP/UDP transport whose outgoing TCP streams
// leave from the gossip address, so that a peer that refuses them (wrong key)
// names this node's address, not whatever source the kernel picked.
type boundTransport struct {
	*memberlist.NetTransport
	local netip.Addr
}

func (t *boundTransport) dial(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if t.local.IsValid() && !t.local.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: t.local.AsSlice()}
	}
	return d.Dial("tcp", addr)
}

// DialTimeout implements memberlist.Transport.
func (t *boundTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.dial(addr, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *boundTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.dial(a.Addr, timeout)
}
