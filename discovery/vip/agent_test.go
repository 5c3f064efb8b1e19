package vip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// simNode is one simulated node: an agent, its health inputs and whether it is alive.
type simNode struct {
	agent     *Agent
	alive     bool
	healthy   bool
	inService bool
	prio      int
	published Node // what the others see (one round late, like gossip)
}

// TestAgentsNeverTwoHolders runs several agents through random failures, recoveries,
// health and service changes, each stepping on the view published the round before
// (propagation delay), and checks after every round that no VIP is announced by two
// live nodes, and that after the events stop every VIP is held by exactly one
// eligible node within a few rounds.
func TestAgentsNeverTwoHolders(t *testing.T) {
	pool := []string{"v1", "v2", "v3", "v4"}
	for seed := uint64(0); seed < 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		pol := Policy{VIPs: pool[:1+r.IntN(4)], Preempt: seed%2 == 0, Quorum: true}
		var nodes []*simNode
		for i := 0; i < 3+r.IntN(3); i++ {
			name := fmt.Sprintf("n%d", i)
			nodes = append(nodes, &simNode{agent: NewAgent(AgentConfig{Node: name, Policy: pol, HandoverTimeout: 3 * time.Second}),
				alive: true, healthy: true, inService: true, prio: 100 + 10*r.IntN(3)})
		}
		now := time.Unix(1000, 0)
		round := func() {
			now = now.Add(500 * time.Millisecond)
			var view View
			view.Known = len(nodes)
			for _, n := range nodes {
				if n.alive {
					view.Nodes = append(view.Nodes, n.published)
				}
			}
			for _, n := range nodes {
				if !n.alive {
					continue
				}
				act := n.agent.Step(view, now)
				_ = act
			}
			for _, n := range nodes {
				if n.alive {
					n.published = n.agent.Self(n.healthy, n.inService, n.prio, now)
				}
			}
			// Safety: at most one live announcer per VIP.
			for _, vip := range pol.VIPs {
				var who []string
				for i, n := range nodes {
					if n.alive && slices.Contains(n.agent.Held(), vip) {
						who = append(who, fmt.Sprint("n", i))
					}
				}
				if len(who) > 1 {
					t.Fatalf("seed %d: %s announced by %v", seed, vip, who)
				}
			}
		}
		for _, n := range nodes {
			n.published = n.agent.Self(true, true, n.prio, now)
		}
		for step := 0; step < 60; step++ {
			n := nodes[r.IntN(len(nodes))]
			switch r.IntN(6) {
			case 0:
				if n.alive { // a dead node's addresses vanish with it
					n.alive = false
					n.agent = NewAgent(AgentConfig{Node: n.agent.cfg.Node, Policy: pol, HandoverTimeout: 3 * time.Second})
				} else {
					n.alive = true
					n.published = n.agent.Self(n.healthy, n.inService, n.prio, now)
				}
			case 1:
				n.healthy = !n.healthy
			case 2:
				n.inService = !n.inService
			case 3:
				n.prio = 100 + 10*r.IntN(3)
			}
			round()
		}
		// Calm: everyone alive, healthy, in service; converge.
		for _, n := range nodes {
			if !n.alive {
				n.alive = true
				n.published = n.agent.Self(true, true, n.prio, now)
			}
			n.healthy, n.inService = true, true
		}
		for i := 0; i < 12; i++ {
			round()
		}
		for _, vip := range pol.VIPs {
			count := 0
			for _, n := range nodes {
				if slices.Contains(n.agent.Held(), vip) {
					count++
				}
			}
			if count != 1 {
				t.Fatalf("seed %d: %s held by %d nodes after convergence", seed, vip, count)
			}
		}
	}
}

func TestAgentHandoverWaitsForRelease(t *testing.T) {
	pol := Policy{VIPs: []string{"v"}, Preempt: true}
	a := NewAgent(AgentConfig{Node: "hi", Policy: pol, HandoverTimeout: 2 * time.Second})
	now := time.Unix(0, 0)
	lo := nd("lo", 100, "v")
	self := a.Self(true, true, 200, now)
	act := a.Step(View{Nodes: []Node{lo, self}}, now)
	if len(act.Acquire) != 0 || !a.Status()[0].Waiting {
		t.Fatalf("took the VIP while lo still announces it: %+v", act)
	}
	// lo released it: take it at once.
	lo.Holds = nil
	act = a.Step(View{Nodes: []Node{lo, self}}, now.Add(100*time.Millisecond))
	if !slices.Equal(act.Acquire, []string{"v"}) {
		t.Fatalf("actions %+v", act)
	}
	if len(act.Transitions) != 1 || act.Transitions[0].To != Master {
		t.Fatalf("transitions %+v", act.Transitions)
	}
	// A holder that never releases: taken after the handover timeout.
	b := NewAgent(AgentConfig{Node: "hi", Policy: pol, HandoverTimeout: 2 * time.Second})
	lo.Holds = []string{"v"}
	b.Step(View{Nodes: []Node{lo, self}}, now)
	if act := b.Step(View{Nodes: []Node{lo, self}}, now.Add(2*time.Second)); !slices.Equal(act.Acquire, []string{"v"}) {
		t.Fatalf("not taken after the handover timeout: %+v", act)
	}
}

func TestAgentFaultAndConflict(t *testing.T) {
	pol := Policy{VIPs: []string{"v"}}
	a := NewAgent(AgentConfig{Node: "me", Policy: pol})
	now := time.Unix(0, 0)
	act := a.Step(View{Nodes: []Node{a.Self(true, true, 100, now)}}, now)
	if !slices.Equal(act.Acquire, []string{"v"}) {
		t.Fatalf("%+v", act)
	}
	if !a.Conflict("v") {
		t.Fatal("the planned holder must re-announce on a conflict")
	}
	act = a.Step(View{Nodes: []Node{a.Self(false, true, 100, now)}}, now)
	if !slices.Equal(act.Release, []string{"v"}) || act.Transitions[0].To != Fault {
		t.Fatalf("unhealthy node keeps its VIP: %+v", act)
	}
	other := nd("other", 100, "v")
	a.Step(View{Nodes: []Node{other, a.Self(true, true, 100, now)}}, now)
	if a.Conflict("v") {
		t.Fatal("a node that is not the planned holder must stop announcing")
	}
	if len(a.Held()) != 0 {
		t.Fatal("still holding after a lost conflict")
	}
}

func TestAgentPreemptDelay(t *testing.T) {
	a := NewAgent(AgentConfig{Node: "me", PreemptDelay: 5 * time.Second})
	t0 := time.Unix(0, 0)
	if a.Self(true, true, 100, t0).Preemptible {
		t.Fatal("preemptible before the delay")
	}
	if !a.Self(true, true, 100, t0.Add(5*time.Second)).Preemptible {
		t.Fatal("not preemptible after the delay")
	}
	a.Self(false, true, 100, t0.Add(6*time.Second))
	if a.Self(true, true, 100, t0.Add(7*time.Second)).Preemptible {
		t.Fatal("a fault must restart the preempt delay")
	}
}

func TestHealthWeightRiseFall(t *testing.T) {
	now := time.Unix(0, 0)
	h := NewHealth(100, []Track{
		{Name: "c2s", Weight: 0, Rise: 2, Fall: 3, InitFail: true},
		{Name: "storage", Weight: -50, Fall: 2},
		{Name: "bonus", Weight: 20},
	}, now)
	if _, ok := h.Effective(); ok {
		t.Fatal("init-fail track must start down (fault)")
	}
	h.Observe("c2s", nil, now)
	if _, ok := h.Effective(); ok {
		t.Fatal("up after 1 of rise 2")
	}
	h.Observe("c2s", nil, now)
	if p, ok := h.Effective(); !ok || p != 120 {
		t.Fatalf("priority %d healthy %v, want 120 true", p, ok)
	}
	bad := errors.New("refused")
	h.Observe("c2s", bad, now)
	h.Observe("c2s", bad, now)
	if _, ok := h.Effective(); !ok {
		t.Fatal("down after 2 of fall 3")
	}
	h.Observe("c2s", bad, now)
	if _, ok := h.Effective(); ok {
		t.Fatal("still healthy after fall 3")
	}
	h.Observe("storage", bad, now)
	h.Observe("storage", bad, now)
	h.Observe("bonus", bad, now)
	if p, _ := h.Effective(); p != 50 {
		t.Fatalf("priority %d, want 100-50", p)
	}
	h2 := NewHealth(10, []Track{{Name: "s", Weight: -100}}, now)
	h2.Observe("s", bad, now)
	if p, _ := h2.Effective(); p != 1 {
		t.Fatalf("priority %d, want clamped to 1", p)
	}
	if ts := h.Tracks(); ts[0].LastError != "refused" || ts[0].Failures != 3 {
		t.Fatalf("tracks %+v", ts)
	}
}

func TestNotifierRunsHooksInOrder(t *testing.T) {
	n := NewNotifier(Hooks{Master: "m", Backup: "b", Any: "any"}, "me", nil)
	var mu sync.Mutex
	var calls []string
	done := make(chan struct{}, 8)
	n.run = func(_ context.Context, s string, args ...string) error {
		mu.Lock()
		calls = append(calls, fmt.Sprint(s, args))
		mu.Unlock()
		done <- struct{}{}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.Start(ctx)
	n.Notify(Transition{VIP: "10.0.0.1", From: Backup, To: Master})
	n.Notify(Transition{VIP: "10.0.0.1", From: Master, To: Fault})
	for i := 0; i < 3; i++ {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("hooks not run")
		}
	}
	cancel()
	n.Wait()
	mu.Lock()
	defer mu.Unlock()
	want := []string{"m[master 10.0.0.1 me]", "any[master 10.0.0.1 me]", "any[fault 10.0.0.1 me]"}
	if !slices.Equal(calls, want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
}
