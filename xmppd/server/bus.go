package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"xedge/discovery"
	"xedge/storage"
	"xedge/storage/ephemeral"
	"xedge/storage/replicated"
	"xedge/xmppd/cluster"
	"xedge/xmppd/module"
	"xedge/xmppd/router"
)

// The cluster bus feature: on a clustered node, the inter-node bus on the
// cluster port (xmppd/cluster), cross-node routing in the router, node loss
// (stanzas re-routed, unavailable presence sent once), drain, and the
// `xmppctl cluster ...` and `sessions --all-nodes` admin commands.

// NodeTable is the ephemeral table in which each node announces itself: key
// node name, value a NodeRow.
const NodeTable = "node"

// NodeRow is a node's row in NodeTable.
type NodeRow struct {
	Addr     string    `json:"addr"`          // cluster address (bus and raft)
	C2S      string    `json:"c2s,omitempty"` // a client address (see-other-host)
	Draining bool      `json:"draining,omitempty"`
	Since    time.Time `json:"since"`
}

func init() { registerFeature(Feature{Name: "cluster bus", Build: buildBus}) }

// busFeatures maps a Server to its bus feature (Server.Bus).
var busFeatures sync.Map

type busFeature struct {
	s   *Server
	rep *replicated.Store
	bus *cluster.Bus

	mu       sync.Mutex
	draining bool
	cancel   context.CancelFunc
	done     chan struct{}
}

// Bus returns the cluster bus, or nil on a single node (or before storage
// started). Other features (XEP-0198 resumption across nodes) send over it.
func (s *Server) Bus() *cluster.Bus {
	if v, ok := busFeatures.Load(s); ok {
		f := v.(*busFeature)
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.bus
	}
	return nil
}

func buildBus(s *Server) ([]StagedComponent, error) {
	if !s.cfg.Clustered() {
		return nil, nil
	}
	f := &busFeature{s: s}
	busFeatures.Store(s, f)
	s.Admin.Handle("cluster", f.admin)
	// While draining, a session that still gets bound here (a c2s without
	// SetDraining) is sent away at once.
	s.Router.Hook(module.EvSessionBound, 0, func(_ context.Context, _ module.Host, ev *module.EventData) bool {
		if f.isDraining() && ev.Session != nil {
			f.sendAway(ev.Session)
			return true
		}
		return false
	})
	s.Admin.Handle("sessions", f.sessions)
	return []StagedComponent{
		{Stage: AfterStorage, Name: "cluster bus", Start: f.start, Stop: f.stop},
		{Stage: AfterC2S, Name: "cluster node row", Start: f.announce, Stop: func(context.Context) error { return nil }},
	}, nil
}

// replicatedOf returns the running replicated store behind the server's store.
func replicatedOf(st StoreWithLifecycle) *replicated.Store {
	l, ok := st.(*lazyStore)
	if !ok {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rep
}

func (f *busFeature) start(ctx context.Context) error {
	rep := replicatedOf(f.s.Store)
	if rep == nil {
		return errors.New("cluster bus: the replicated store is not running")
	}
	cfg := f.s.cfg
	b := cluster.New(cluster.Config{
		Node: cfg.Node, Incarnation: rep.Incarnation(), Transport: rep, QueueMax: cfg.Bus.QueueMax,
		Heartbeat: heartbeat(cfg.Bus.Heartbeat), HeartbeatTimeout: cfg.Bus.HeartbeatTimeout,
		Resolve: f.resolve, Logger: f.s.log,
	})
	f.s.Router.AttachBus(b, rep.Incarnation())
	// Stanzas forwarded to resumable sessions are acknowledged once their
	// resumption state is replicated (see router.holdIfResumable).
	b.SetBarrier(func(ctx context.Context) error {
		if f.s.C2S == nil {
			return nil
		}
		return f.s.C2S.SyncReplicas(ctx)
	})
	if err := b.Start(ctx); err != nil {
		return fmt.Errorf("cluster bus: %w", err)
	}
	f.mu.Lock()
	f.rep, f.bus = rep, b
	f.mu.Unlock()
	rep.OnEphemeralDropRows(f.dropped)
	f.publish()
	lctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go f.sweep(lctx, cfg.Bus.ConflictSweep)
	return nil
}

// heartbeat maps the setting (0: none) to cluster.Config's (negative: none).
func heartbeat(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func (f *busFeature) stop(ctx context.Context) error {
	if f.cancel != nil {
		f.cancel()
		<-f.done
	}
	f.mu.Lock()
	b := f.bus
	f.mu.Unlock()
	if b != nil {
		return b.Stop(ctx)
	}
	return nil
}

// announce republishes the node row once the client listeners are bound.
func (f *busFeature) announce(context.Context) error {
	f.publish()
	return nil
}

func (f *busFeature) publish() {
	f.mu.Lock()
	rep, draining := f.rep, f.draining
	f.mu.Unlock()
	if rep == nil {
		return
	}
	row := NodeRow{Addr: rep.Addr(), Draining: draining, Since: f.s.started.UTC()}
	for _, a := range f.s.C2S.Addrs() {
		if kind, addr, _ := strings.Cut(a, " "); kind == "starttls" {
			row.C2S = addr
			break
		}
	}
	b, _ := json.Marshal(row)
	f.s.Store.Ephemeral(NodeTable).Put(f.s.cfg.Node, b)
}

// nodes returns the live nodes' rows (this node's too), by name.
func (f *busFeature) nodes() map[string]NodeRow {
	out := map[string]NodeRow{}
	f.s.Store.Ephemeral(NodeTable).Scan("", func(r storage.Row) bool {
		var nr NodeRow
		if json.Unmarshal(r.Value, &nr) == nil && r.Key == r.Node {
			out[r.Node] = nr
		}
		return true
	})
	return out
}

func (f *busFeature) resolve(node string) (string, bool) {
	for _, r := range f.s.Store.Ephemeral(NodeTable).Get(node) {
		if r.Node != node {
			continue
		}
		var nr NodeRow
		if json.Unmarshal(r.Value, &nr) == nil && nr.Addr != "" {
			return nr.Addr, true
		}
	}
	return "", false
}

func (f *busFeature) sweep(ctx context.Context, every time.Duration) {
	defer close(f.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.s.Router.SweepConflicts()
		}
	}
}

// dropped is the replicated store's callback when a node's rows are dropped
// (it went silent, or restarted under a new incarnation). Every survivor
// re-routes what it had queued for that node; exactly one survivor — the
// live node with the smallest name, the same answer on every survivor, and
// never the lost node — sends the unavailable presence of its sessions.
func (f *busFeature) dropped(node string, inc uint64, rows []ephemeral.Change, _ bool) {
	var sessions []storage.Row
	for _, c := range rows {
		if c.Table == router.SessionTable {
			sessions = append(sessions, c.Row)
		}
	}
	live := f.nodes()
	delete(live, node)
	live[f.s.cfg.Node] = NodeRow{}
	responsible := slices.Min(slices.Collect(maps.Keys(live))) == f.s.cfg.Node
	f.s.log.Info("cluster node lost", "component", "bus", "node", node, "incarnation", inc,
		"sessions", len(sessions), "responsible", responsible)
	go f.s.Router.NodeLost(context.Background(), node, sessions, responsible)
}

// --- admin ---------------------------------------------------------------

// MemberInfo is one line of `xmppctl cluster members`.
type MemberInfo struct {
	Node        string `json:"node"`
	Addr        string `json:"addr"`
	State       string `json:"state"` // up, draining, down (in the configuration, not heard from)
	Incarnation uint64 `json:"incarnation,string,omitempty"`
	Sessions    int    `json:"sessions"`
	Storage     string `json:"storage"` // voter|nonvoter|witness/durable|ram-only[/leader]
	C2S         string `json:"c2s,omitempty"`
	Bus         string `json:"bus,omitempty"`    // this node's link to it: connected, queued N
	Gossip      string `json:"gossip,omitempty"` // membership view: alive, suspect, failed, left
	DNSName     string `json:"dns_name,omitempty"`
}

func (f *busFeature) members() []MemberInfo {
	f.mu.Lock()
	rep, b := f.rep, f.bus
	f.mu.Unlock()
	byNode := map[string]*MemberInfo{}
	get := func(n string) *MemberInfo {
		m := byNode[n]
		if m == nil {
			m = &MemberInfo{Node: n, State: "down"}
			byNode[n] = m
		}
		return m
	}
	if rep != nil {
		for _, m := range rep.Members() {
			mi := get(m.Name)
			mi.Addr, mi.Storage = m.Addr, m.State
		}
	}
	f.s.Store.Ephemeral(NodeTable).Scan("", func(r storage.Row) bool {
		var nr NodeRow
		if json.Unmarshal(r.Value, &nr) != nil || r.Key != r.Node {
			return true
		}
		mi := get(r.Node)
		mi.State, mi.Incarnation, mi.C2S = "up", r.Incarnation, nr.C2S
		if nr.Draining {
			mi.State = "draining"
		}
		if mi.Addr == "" {
			mi.Addr = nr.Addr
		}
		return true
	})
	f.s.Store.Ephemeral(router.SessionTable).Scan("", func(r storage.Row) bool {
		get(r.Node).Sessions++
		return true
	})
	if b != nil {
		for _, ps := range b.Stats() {
			st := "connecting"
			if ps.Connected {
				st = "connected"
			}
			if ps.Queued > 0 {
				st += fmt.Sprintf(", %d queued", ps.Queued)
			}
			if ps.Stalls > 0 {
				st += fmt.Sprintf(", %d stalled links redialed", ps.Stalls)
			}
			get(ps.Node).Bus = st
		}
	}
	if m := byNode[f.s.cfg.Node]; m != nil {
		m.Bus = "self"
	}
	for _, gm := range f.s.Membership().Members() {
		if mi := byNode[gm.Name]; mi != nil {
			mi.Gossip, mi.DNSName = string(gm.Status), gm.DNSName
		}
	}
	out := make([]MemberInfo, 0, len(byNode))
	for _, m := range byNode {
		if m.Storage == "" {
			m.Storage = "-"
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

func (f *busFeature) admin(ctx context.Context, args []string) (any, error) {
	if len(args) == 0 {
		return nil, errors.New("usage: cluster members|join ADDR [--force]|leave|forget NODE|drain|undrain")
	}
	switch args[0] {
	case "members":
		return f.members(), nil
	case "drain":
		n, to := f.drain(true)
		if to == "" {
			return fmt.Sprintf("draining: not accepting clients; %d session(s) closed with system-shutdown (clients reconnect elsewhere)", n), nil
		}
		return fmt.Sprintf("draining: not accepting clients; %d session(s) sent to %s", n, to), nil
	case "undrain":
		f.drain(false)
		return "accepting clients again", nil
	case "forget":
		if len(args) != 2 {
			return nil, errors.New("usage: cluster forget NODE")
		}
		if _, up := f.nodes()[args[1]]; up {
			return nil, fmt.Errorf("node %s is up: stop it first, or run `xmppctl cluster leave` on it", args[1])
		}
		f.mu.Lock()
		rep := f.rep
		f.mu.Unlock()
		if err := rep.Forget(ctx, args[1]); err != nil {
			return nil, err
		}
		return "forgot " + args[1], nil
	case "leave":
		n, _ := f.drain(true)
		f.s.log.Info("leaving the cluster on request (xmppctl cluster leave)", "component", "bus", "sessions_moved", n)
		f.mu.Lock()
		rep := f.rep
		f.mu.Unlock()
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := rep.Leave(lctx); err != nil {
			return nil, fmt.Errorf("leave: %w", err)
		}
		// The node is no longer a member: stop the process (a supervisor
		// restarting it rejoins only with --join).
		go func() { time.Sleep(200 * time.Millisecond); _ = syscall.Kill(os.Getpid(), syscall.SIGTERM) }()
		return "left the cluster; xmppd stops", nil
	case "join":
		return f.join(ctx, args[1:])
	}
	return nil, fmt.Errorf("unknown cluster command %q", args[0])
}

// drainer is what drain needs from c2s (optional: older c2s lacks it).
type drainer interface{ SetDraining(on bool) }

// seeOtherHoster is implemented by a c2s that puts the host of
// Close("see-other-host", host) into the <see-other-host/> element.
type seeOtherHoster interface{ SeeOtherHost() bool }

// drain stops (on) or resumes accepting clients; on closes every local
// session, sending the client to a live, non-draining peer when one is known.
func (f *busFeature) drain(on bool) (int, string) {
	f.mu.Lock()
	f.draining = on
	f.mu.Unlock()
	if d, ok := any(f.s.C2S).(drainer); ok {
		d.SetDraining(on)
	}
	f.publish()
	if err := f.s.Membership().UpdateTags(func(t *discovery.Tags) { t.Draining = on }); err != nil {
		f.s.log.Warn("cannot tell the cluster view that this node drains", "component", "bus", "err", err)
	}
	if !on {
		f.s.log.Info("undrained: accepting clients", "component", "bus")
		return 0, ""
	}
	to, soh := f.otherHost()
	ss := f.s.Router.All()
	for _, s := range ss {
		f.sendAwayTo(s, to, soh)
	}
	f.s.log.Info("draining: not accepting clients", "component", "bus", "sessions", len(ss), "see_other_host", to)
	if !soh {
		to = ""
	}
	return len(ss), to
}

func (f *busFeature) isDraining() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.draining
}

// sendAway closes a session of a draining node towards a live peer.
func (f *busFeature) sendAway(s module.Session) {
	to, soh := f.otherHost()
	f.sendAwayTo(s, to, soh)
}

// otherHost returns the client address of the first live, non-draining peer
// (by name), and whether c2s can send clients there (see-other-host).
func (f *busFeature) otherHost() (string, bool) {
	var to string
	nodes := f.nodes()
	for _, n := range slices.Sorted(maps.Keys(nodes)) {
		if nr := nodes[n]; n != f.s.cfg.Node && !nr.Draining && nr.C2S != "" {
			to = nr.C2S
			break
		}
	}
	soh := false
	if c, ok := any(f.s.C2S).(seeOtherHoster); ok {
		soh = c.SeeOtherHost()
	}
	return to, soh
}

func (f *busFeature) sendAwayTo(s module.Session, to string, soh bool) {
	if to != "" && soh {
		s.Close("see-other-host", to)
	} else {
		s.Close("system-shutdown", "this node is draining: reconnect")
	}
}

// sessions is `xmppctl sessions [--all-nodes]`.
func (f *busFeature) sessions(_ context.Context, args []string) (any, error) {
	out := []router.SessionInfo{}
	local := map[string]router.SessionInfo{}
	for _, ss := range f.s.Router.All() {
		var si router.SessionInfo
		if d, ok := ss.(router.Describer); ok {
			si = d.Info()
		} else {
			si = router.SessionInfo{JID: ss.JID().String(), ID: ss.ID()}
		}
		si.Node = f.s.cfg.Node
		local[si.JID] = si
		if len(args) == 0 {
			out = append(out, si)
		}
	}
	if len(args) == 0 {
		return out, nil
	}
	if len(args) != 1 || args[0] != "--all-nodes" {
		return nil, errors.New("usage: sessions [--all-nodes]")
	}
	for _, si := range f.s.Router.AllNodes() {
		if l, ok := local[si.JID]; ok && si.Node == f.s.cfg.Node {
			si = l
		}
		out = append(out, si)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].JID < out[j].JID
	})
	return out, nil
}

var _ module.Session = (*router.RemoteSession)(nil)
