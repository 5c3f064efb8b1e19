package vip

import (
	"net"
	"slices"
	"sync"
	"time"
)

// Adverts is the backups' side of the VIP advert, keepalived's master down
// timer: every node with VIPs configured broadcasts an advert (a heartbeat)
// every few hundred milliseconds on the VIP segment; Adverts records when each
// node's last one arrived and tells which node has been silent for longer than
// its dead interval (Mult times the interval the sender announces). The caller
// takes a silent holder's VIPs over without waiting for the cluster's failure
// detection (the gossip's suspicion and the store's silence timeout, seconds
// under load).
//
// Only a node heard at least once can be silent: where the adverts do not
// arrive at all (a segment that drops them, an older node) nothing changes.
// A node whose own loop was stalled (Stalled) decides nothing for a moment:
// its reader may not have caught up with the adverts that arrived meanwhile.
type Adverts struct {
	// Mult is the dead interval in advert intervals (default 4; keepalived's
	// master down interval is 3 intervals plus a skew of up to one).
	Mult int

	mu        sync.Mutex
	nodes     map[string]*advertSeen
	holdUntil time.Time
}

type advertSeen struct {
	mac      net.HardwareAddr
	first    time.Time
	last     time.Time
	interval time.Duration
	seq      uint32
	count    uint64
	missed   uint64        // sequence numbers skipped (frames lost or a restart)
	maxGap   time.Duration // longest time between two adverts
	silences int           // times the node was found silent past its dead interval
	wasDown  bool
}

// AdvertStatus is one node's adverts as this node hears them (`xmppctl vip`).
type AdvertStatus struct {
	Node     string        `json:"node"`
	Interval time.Duration `json:"interval"`
	Dead     time.Duration `json:"dead_interval"`
	Ago      time.Duration `json:"last_ago"`
	Count    uint64        `json:"count"`
	Missed   uint64        `json:"missed,omitempty"`
	MaxGap   time.Duration `json:"max_gap"`
	Silent   bool          `json:"silent,omitempty"`
	Silences int           `json:"silences,omitempty"`
}

// NewAdverts returns an empty tracker with dead interval mult × the sender's
// advert interval (mult below 2: 4).
func NewAdverts(mult int) *Adverts {
	if mult < 2 {
		mult = 4
	}
	return &Adverts{Mult: mult, nodes: map[string]*advertSeen{}}
}

// Heard records an advert of node (sent every interval, sequence seq, from mac)
// read at at.
func (a *Adverts) Heard(node string, interval time.Duration, seq uint32, mac net.HardwareAddr, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.nodes[node]
	if s == nil {
		s = &advertSeen{first: at}
		a.nodes[node] = s
	} else {
		if gap := at.Sub(s.last); gap > s.maxGap {
			s.maxGap = gap
		}
		if seq > s.seq+1 {
			s.missed += uint64(seq - s.seq - 1)
		}
	}
	s.last, s.interval, s.seq, s.mac = at, interval, seq, slices.Clone(mac)
	s.count++
	s.wasDown = false
}

// HeardFrom records that the node using mac is alive (it announced a VIP: a
// holder found silent by mistake answers a takeover with its own gratuitous
// ARP, which ends its silence here and gives it its VIP back). It reports
// the node, or "" when no advert came from mac.
func (a *Adverts) HeardFrom(mac net.HardwareAddr, at time.Time) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, s := range a.nodes {
		if slices.Equal(s.mac, mac) {
			if at.After(s.last) {
				s.last = at
			}
			s.wasDown = false
			return name
		}
	}
	return ""
}

func (a *Adverts) dead(s *advertSeen) time.Duration {
	return time.Duration(a.Mult) * s.interval
}

// Silent reports whether node, heard before, has sent no advert for longer
// than its dead interval at now (and for how long it has been silent).
func (a *Adverts) Silent(node string, now time.Time) (time.Duration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.nodes[node]
	if s == nil || s.interval <= 0 || now.Before(a.holdUntil) {
		return 0, false
	}
	ago := now.Sub(s.last)
	if ago <= a.dead(s) {
		return ago, false
	}
	if !s.wasDown {
		s.wasDown = true
		s.silences++
	}
	return ago, true
}

// Stalled tells the tracker this node itself was stalled until now: no node
// is silent before now+hold (the reader gets to read what arrived meanwhile).
func (a *Adverts) Stalled(now time.Time, hold time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t := now.Add(hold); t.After(a.holdUntil) {
		a.holdUntil = t
	}
}

// NextDeadline is the earliest time after now at which a node heard and not
// yet silent turns silent (zero: none).
func (a *Adverts) NextDeadline(now time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next time.Time
	for _, s := range a.nodes {
		if s.interval <= 0 {
			continue
		}
		d := s.last.Add(a.dead(s))
		if d.Before(a.holdUntil) {
			d = a.holdUntil
		}
		if d.After(now) && (next.IsZero() || d.Before(next)) {
			next = d
		}
	}
	return next
}

// Forget drops node (it left the cluster).
func (a *Adverts) Forget(node string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.nodes, node)
}

// Status lists every node heard, by name.
func (a *Adverts) Status(now time.Time) []AdvertStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]AdvertStatus, 0, len(a.nodes))
	for name, s := range a.nodes {
		ago := now.Sub(s.last)
		out = append(out, AdvertStatus{Node: name, Interval: s.interval, Dead: a.dead(s), Ago: ago, Count: s.count,
			Missed: s.missed, MaxGap: s.maxGap, Silent: ago > a.dead(s), Silences: s.silences})
	}
	slices.SortFunc(out, func(x, y AdvertStatus) int {
		if x.Node < y.Node {
			return -1
		}
		if x.Node > y.Node {
			return 1
		}
		return 0
	})
	return out
}
