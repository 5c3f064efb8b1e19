package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stamp is a hybrid logical clock timestamp (Kulkarni et al.): wall-clock
// nanoseconds and a logical counter, ordered cluster-wide together with the
// node name as the tie-break. It orders session binds across nodes: of two
// binds of one full JID, the one with the smaller Stamp is the older.
type Stamp struct {
	Wall    int64  `json:"w"`
	Logical uint32 `json:"l"`
	Node    string `json:"n"`
}

// Less orders stamps: wall time, then the logical counter, then node name.
func (a Stamp) Less(b Stamp) bool {
	if a.Wall != b.Wall {
		return a.Wall < b.Wall
	}
	if a.Logical != b.Logical {
		return a.Logical < b.Logical
	}
	return a.Node < b.Node
}

// IsZero reports whether a is the zero stamp.
func (a Stamp) IsZero() bool { return a.Wall == 0 && a.Logical == 0 && a.Node == "" }

// String renders a as "wall.logical@node".
func (a Stamp) String() string { return fmt.Sprintf("%d.%d@%s", a.Wall, a.Logical, a.Node) }

// ParseStamp parses String's form.
func ParseStamp(s string) (Stamp, error) {
	wl, node, ok := strings.Cut(s, "@")
	w, l, ok2 := strings.Cut(wl, ".")
	if !ok || !ok2 {
		return Stamp{}, fmt.Errorf("cluster: bad stamp %q", s)
	}
	wall, err := strconv.ParseInt(w, 10, 64)
	if err != nil {
		return Stamp{}, fmt.Errorf("cluster: bad stamp %q", s)
	}
	lo, err := strconv.ParseUint(l, 10, 32)
	if err != nil {
		return Stamp{}, fmt.Errorf("cluster: bad stamp %q", s)
	}
	return Stamp{Wall: wall, Logical: uint32(lo), Node: node}, nil
}

// Clock is a hybrid logical clock. Safe for concurrent use.
type Clock struct {
	node string
	now  func() time.Time

	mu      sync.Mutex
	wall    int64
	logical uint32
}

// NewClock returns a clock for node; now defaults to time.Now.
func NewClock(node string, now func() time.Time) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{node: node, now: now}
}

// Now returns a stamp greater than every stamp this clock returned or observed.
func (c *Clock) Now() Stamp {
	pt := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt > c.wall {
		c.wall, c.logical = pt, 0
	} else {
		c.logical++
	}
	return Stamp{Wall: c.wall, Logical: c.logical, Node: c.node}
}

// Observe merges a stamp received from another node, so that every later
// Now is greater than it (even if this node's wall clock is behind).
func (c *Clock) Observe(s Stamp) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.Wall > c.wall || (s.Wall == c.wall && s.Logical > c.logical) {
		c.wall, c.logical = s.Wall, s.Logical
	}
}
