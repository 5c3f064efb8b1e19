package vip

import (
	"slices"
	"sync"
	"time"
)

// State is this node's state for one VIP, in keepalived's words.
type State string

const (
	Master State = "master" // this node holds the VIP
	Backup State = "backup" // eligible, another node holds it (or nobody)
	Fault  State = "fault"  // this node is unhealthy, out of service or without quorum
)

// AgentConfig configures one node's agent.
type AgentConfig struct {
	Node   string
	Policy Policy
	// PreemptDelay: the node publishes itself preemptible only after being eligible
	// this long (keepalived's preempt_delay). 0 = at once.
	PreemptDelay time.Duration
	// HandoverTimeout: a VIP planned for this node while another live node still
	// announces it is taken only after that node released it or after this long
	// (default 2 s): a planned move never has two announcers, a dead holder is not
	// in the view and is not waited for.
	HandoverTimeout time.Duration
}

// Actions is what one Step asks the executor (netcfg) to do now.
type Actions struct {
	Acquire []string // add the address, announce (GARP / unsolicited NA), tickle
	Release []string // remove the address, stop announcing
	// Transitions are the per-VIP state changes of this node (for notify hooks).
	Transitions []Transition
}

// Transition is a state change of this node for one VIP.
type Transition struct {
	VIP    string `json:"vip"`
	From   State  `json:"from"`
	To     State  `json:"to"`
	Reason string `json:"reason"`
}

// VIPStatus is one line of `xmppctl vip`.
type VIPStatus struct {
	VIP     string    `json:"vip"`
	Holder  string    `json:"holder"` // planned holder in this node's view ("" = none)
	Reason  string    `json:"reason"`
	Since   time.Time `json:"since"` // when this node last saw the holder change
	State   State     `json:"state"` // this node's state for the VIP
	Waiting bool      `json:"waiting,omitempty"`
}

// Agent turns successive views into actions for one node. It is safe for concurrent
// use; Step is normally called from one loop.
type Agent struct {
	cfg AgentConfig

	mu            sync.Mutex
	holding       map[string]time.Time // VIPs this node announces, since
	waiting       map[string]time.Time // planned here, previous holder still announcing, since
	states        map[string]State
	holderSince   map[string]time.Time
	lastHolder    map[string]string
	plan          Plan
	eligibleSince time.Time
}

// NewAgent returns an agent holding nothing.
func NewAgent(cfg AgentConfig) *Agent {
	if cfg.HandoverTimeout <= 0 {
		cfg.HandoverTimeout = 2 * time.Second
	}
	a := &Agent{cfg: cfg, holding: map[string]time.Time{}, waiting: map[string]time.Time{},
		states: map[string]State{}, holderSince: map[string]time.Time{}, lastHolder: map[string]string{}}
	for _, v := range cfg.Policy.VIPs {
		a.states[v] = Fault
	}
	return a
}

// Self returns the row this node publishes about itself: its health, service flag,
// effective priority, whether the preempt delay has passed, and what it holds.
func (a *Agent) Self(healthy, inService bool, priority int, now time.Time) Node {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := Node{Name: a.cfg.Node, Healthy: healthy, InService: inService, Priority: priority}
	if healthy && inService {
		if a.eligibleSince.IsZero() {
			a.eligibleSince = now
		}
		n.Preemptible = now.Sub(a.eligibleSince) >= a.cfg.PreemptDelay
	} else {
		a.eligibleSince = time.Time{}
	}
	n.Holds = a.heldLocked()
	return n
}

func (a *Agent) heldLocked() []string {
	var out []string
	for _, v := range a.cfg.Policy.VIPs {
		if _, ok := a.holding[v]; ok {
			out = append(out, v)
		}
	}
	return out
}

// Held returns the VIPs this node announces, in pool order.
func (a *Agent) Held() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.heldLocked()
}

// Step computes the plan for view v and returns what this node must do. The caller
// executes the actions; an Acquire that fails is reported with Failed. This node's
// own row in v is replaced by what the agent knows it holds.
func (a *Agent) Step(v View, now time.Time) Actions {
	a.mu.Lock()
	defer a.mu.Unlock()
	nodes := make([]Node, 0, len(v.Nodes))
	var self *Node
	for _, n := range v.Nodes {
		if n.Name == a.cfg.Node {
			n.Holds = a.heldLocked()
			nodes = append(nodes, n)
			self = &nodes[len(nodes)-1]
			continue
		}
		nodes = append(nodes, n)
	}
	v.Nodes = nodes
	plan := a.cfg.Policy.Assign(v)
	a.plan = plan
	var act Actions
	selfEligible := self != nil && plan.Eligible(*self) && plan.HasQuorum
	for _, vip := range a.cfg.Policy.VIPs {
		holder := plan.Holder[vip]
		if holder != a.lastHolder[vip] || a.holderSince[vip].IsZero() {
			a.lastHolder[vip] = holder
			a.holderSince[vip] = now
		}
		_, mine := a.holding[vip]
		switch {
		case holder == a.cfg.Node && !mine:
			// Another live node still announcing it? Wait for its release (bounded).
			busy := false
			for _, n := range v.Nodes {
				if n.Name != a.cfg.Node && slices.Contains(n.Holds, vip) {
					busy = true
				}
			}
			if busy {
				since, ok := a.waiting[vip]
				if !ok {
					a.waiting[vip] = now
					since = now
				}
				if now.Sub(since) < a.cfg.HandoverTimeout {
					break
				}
			}
			delete(a.waiting, vip)
			a.holding[vip] = now
			act.Acquire = append(act.Acquire, vip)
		case holder != a.cfg.Node && mine:
			delete(a.holding, vip)
			act.Release = append(act.Release, vip)
		}
		if holder != a.cfg.Node {
			delete(a.waiting, vip)
		}
		st := Backup
		if _, ok := a.holding[vip]; ok {
			st = Master
		} else if !selfEligible {
			st = Fault
		}
		if prev := a.states[vip]; prev != st {
			act.Transitions = append(act.Transitions, Transition{VIP: vip, From: prev, To: st, Reason: plan.Reason[vip]})
			a.states[vip] = st
		}
	}
	return act
}

// Failed records that acquiring vip failed: the node does not hold it (the next
// Step tries again).
func (a *Agent) Failed(vip string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.holding, vip)
	a.states[vip] = Backup
}

// Conflict tells the agent another host announced vip on the wire. It returns true
// when this node should re-announce (it holds the VIP in the current plan: the
// winner re-announces) and false when it must stop announcing at once (it is not
// the planned holder); in that case the VIP is dropped from what the agent holds
// and the caller removes the address.
func (a *Agent) Conflict(vip string) (reannounce bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.plan.Holder[vip] == a.cfg.Node && a.plan.HasQuorum {
		return true
	}
	delete(a.holding, vip)
	return false
}

// Status describes every VIP as this node sees it.
func (a *Agent) Status() []VIPStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]VIPStatus, 0, len(a.cfg.Policy.VIPs))
	for _, v := range a.cfg.Policy.VIPs {
		_, w := a.waiting[v]
		out = append(out, VIPStatus{VIP: v, Holder: a.plan.Holder[v], Reason: a.plan.Reason[v],
			Since: a.holderSince[v], State: a.states[v], Waiting: w})
	}
	return out
}

// Plan returns the last plan computed.
func (a *Agent) Plan() Plan {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.plan
}
