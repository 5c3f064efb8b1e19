package discovery

import (
	"errors"
	"sync"
	"time"
)

// StaticView is a View whose members are set by its owner: the view of a node
// that runs without gossip (single node, or discovery turned off), and a fixture
// for unit tests of consumers (VIP placement, DNS publishing).
type StaticView struct {
	mu      sync.Mutex
	local   string
	members map[string]Member
	subs    notifier
}

// NewStaticView returns a view whose local node is local (listed as alive) plus
// the other members given.
func NewStaticView(local Member, others ...Member) *StaticView {
	if local.Status == "" {
		local.Status = StatusAlive
	}
	if local.FoundBy == "" {
		local.FoundBy = "self"
	}
	v := &StaticView{local: local.Name, members: map[string]Member{local.Name: local}}
	for _, m := range others {
		v.members[m.Name] = m
	}
	return v
}

// Local returns the local member.
func (v *StaticView) Local() Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.members[v.local]
}

// Members returns all members sorted by name.
func (v *StaticView) Members() []Member {
	v.mu.Lock()
	out := make([]Member, 0, len(v.members))
	for _, m := range v.members {
		out = append(out, m)
	}
	v.mu.Unlock()
	SortMembers(out)
	return out
}

// Subscribe implements View.
func (v *StaticView) Subscribe() (<-chan struct{}, func()) { return v.subs.subscribe() }

// SetTags implements View.
func (v *StaticView) SetTags(t Tags) error { return v.UpdateTags(func(old *Tags) { *old = t }) }

// UpdateTags implements View.
func (v *StaticView) UpdateTags(f func(*Tags)) error {
	if f == nil {
		return errors.New("discovery: UpdateTags: nil function")
	}
	v.mu.Lock()
	m := v.members[v.local]
	f(&m.Tags)
	v.members[v.local] = m
	v.mu.Unlock()
	v.subs.notify()
	return nil
}

// Put adds or replaces a member (tests; a Status change sets Since).
func (v *StaticView) Put(m Member) {
	v.mu.Lock()
	if old, ok := v.members[m.Name]; (!ok || old.Status != m.Status) && m.Since.IsZero() {
		m.Since = time.Now()
	}
	v.members[m.Name] = m
	v.mu.Unlock()
	v.subs.notify()
}

// Remove removes a member (tests: a member reaped by gossip).
func (v *StaticView) Remove(name string) {
	v.mu.Lock()
	delete(v.members, name)
	v.mu.Unlock()
	v.subs.notify()
}

// notifier fans a coalesced "changed" signal out to subscribers.
type notifier struct {
	mu   sync.Mutex
	next int
	subs map[int]chan struct{}
}

func (n *notifier) subscribe() (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs == nil {
		n.subs = map[int]chan struct{}{}
	}
	id := n.next
	n.next++
	ch := make(chan struct{}, 1)
	n.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			n.mu.Lock()
			delete(n.subs, id)
			n.mu.Unlock()
		})
	}
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ch := range n.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

var _ View = (*StaticView)(nil)
