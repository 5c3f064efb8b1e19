//go:build vmtest && scenarios

package vmtest

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"xedge/build/lab"
)

// Scenarios (d) and (c) on one lab (three booted nodes are the expensive part):
// one node's iSCSI target frozen, then every node's target stopped. Run with
// `go test -tags 'vmtest scenarios' -run TestScenarioStorage ./build/vmtest`.

var (
	modeRe = regexp.MustCompile(`(?m)^mode:\s+(\S+)`)
	roleRe = regexp.MustCompile(`(?m)^role:\s+(\S+)`)
)

func storageMode(s string) (mode, role string) {
	if m := modeRe.FindStringSubmatch(s); m != nil {
		mode = m[1]
	}
	if m := roleRe.FindStringSubmatch(s); m != nil {
		role = m[1]
	}
	return mode, role
}

// waitStorage polls a node's `storage` until want accepts (mode, role); it returns
// the time it took and the last output.
func waitStorage(ctx context.Context, dir, node string, d time.Duration, want func(mode, role string) bool) (time.Duration, string, error) {
	start := time.Now()
	out, err := consoleUntil(ctx, dir, node, "storage", d, func(s string) bool { return want(storageMode(s)) })
	return time.Since(start), out, err
}

// tcgNodeLoss scales how long a node may stay silent before the others declare
// it lost (its ephemeral rows dropped: 4 × raft-report-interval, 1 s by default)
// and how long a bus link may stay silent before it is redialed (1 s) for TCG
// guests on a shared host, as the lab's TCG timing scales raft's and the gossip's:
// at a host load of 15-20 each guest gets a fifth of a CPU, and with xmppd's own
// timing the storage scenario's nodes — their targets healthy — declared each other
// lost every few seconds (node logs of the 07:14 UTC run on 2026-12-06: "node
// silent: dropped its ephemeral rows", "cluster peer link stalled ... silent=1.199s").
// The scenarios that fail a node on purpose, (b), keep the fast detection.
const tcgNodeLoss = "raft-report-interval: 1s\nbus-heartbeat-timeout: 3s\n"

// scenarioStall is the clients' liveness check in (c), (d) and (f).
const scenarioStall = 10 * time.Second

// freezeHold is how long (d) keeps node2's target frozen under message traffic.
const freezeHold = 60 * time.Second

func TestScenarioStorage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	dir, st := scenarioLab(t, ctx, 3, true, tcgNodeLoss)
	nodes := []string{"node1", "node2", "node3"}
	for _, n := range nodes {
		if _, out, err := waitStorage(ctx, dir, n, 3*time.Minute, func(m, _ string) bool { return m == "durable" }); err != nil {
			t.Fatalf("%s not durable on its LUN before the scenario: %v\n%s", n, err, out)
		}
	}
	registerUsers(t, ctx, dir, nodes, "alice", "bob")
	// XEP-0198 clients as in (f): a connection that fails or stalls is resumed
	// through the next node (each outage is reported).
	alice := newSMClient("alice", st.NetNS, "10.77.0.11:5222", "alice", "phone", t.Logf)
	alice.fallbacks = []string{"10.77.0.13:5222", "10.77.0.12:5222"}
	bob := newSMClient("bob", st.NetNS, "10.77.0.13:5222", "bob", "desk", t.Logf)
	bob.fallbacks = []string{"10.77.0.11:5222", "10.77.0.12:5222"}
	// A client's own liveness check and resume attempts, generous: c2s answers
	// <r/> only once a peer has confirmed the session's state, and a resumption
	// that takes the session over from a peer waits for that peer, both seconds
	// on loaded TCG guests; at 3 s the clients of a run at host load 17 dropped
	// and resumed every few seconds, resent thousands of stanzas each time and
	// ended in 'too many unacknowledged stanzas', and aborted resumptions sent
	// the session back and forth between the nodes.
	alice.stallAfter, bob.stallAfter = scenarioStall, scenarioStall
	alice.attemptTimeout, bob.attemptTimeout = scenarioStall, scenarioStall
	for _, c := range []*smClient{alice, bob} {
		if err := c.login(30 * time.Second); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	stopResume := make(chan struct{})
	o := &outages{}
	wgA, wgB := keepResumed(alice, stopResume, o), keepResumed(bob, stopResume, o)
	t.Cleanup(func() { close(stopResume); wgA.Wait(); wgB.Wait(); alice.close(); bob.close() })
	// outagesSince reports the client outages recorded after the first n.
	outagesSince := func(n int) (string, int) {
		o.mu.Lock()
		defer o.mu.Unlock()
		for _, err := range o.errs {
			t.Errorf("client: %v", err)
		}
		o.errs = nil
		return orNone(o.list[min(n, len(o.list)):]), len(o.list)
	}

	t.Run("d-one-target-frozen", func(t *testing.T) {
		_, n0 := outagesSince(0)
		stop := make(chan struct{})
		wg := traffic(alice, bob, 100*time.Millisecond, stop)
		time.Sleep(2 * time.Second)
		_, a0 := alice.counts()
		_, b0 := bob.counts()
		t0 := time.Now()
		if out, err := lab.Control(dir, "storage freeze node2"); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("storage freeze node2: %v %s", err, out)
		}
		// node2 goes RAM-only and demotes itself; a write meanwhile still commits.
		took, out2, err := waitStorage(ctx, dir, "node2", 3*time.Minute, func(m, r string) bool { return m == "ram-only" && r != "voter" })
		demoted := time.Since(t0)
		if err != nil {
			t.Errorf("node2 did not go ram-only and non-voter: %v", err)
		}
		_ = took
		regOut, regErr := lab.Run(ctx, nodeSock(dir, "node1"), "register dora secret-dora")
		others := map[string]string{}
		for _, n := range []string{"node1", "node3"} {
			s, _ := lab.Run(ctx, nodeSock(dir, n), "storage")
			m, r := storageMode(s)
			others[n] = m + "/" + r
			if m != "durable" {
				t.Errorf("%s is %s while only node2's target is frozen:\n%s", n, m, s)
			}
		}
		// The freeze lasts freezeHold under traffic (a target that hangs for
		// a minute, not a blip: the 07:21 UTC run's long freeze is where node2
		// never came back).
		if d := freezeHold - time.Since(t0); d > 0 {
			time.Sleep(d)
		}
		held := time.Since(t0)
		close(stop)
		wg.Wait()
		lost, acks := checkDelivery(t, alice, bob)
		_, a1 := alice.counts()
		_, b1 := bob.counts()
		outs, _ := outagesSince(n0)
		// The target comes back: node2 re-persists and is promoted again.
		frozen := time.Since(t0)
		t1 := time.Now()
		if out, err := lab.Control(dir, "storage start node2"); err != nil {
			t.Fatalf("storage start node2: %v %s", err, out)
		}
		_, out2b, err := waitStorage(ctx, dir, "node2", 5*time.Minute, func(m, r string) bool { return m == "durable" && r == "voter" })
		back := time.Since(t1)
		backText := fmt.Sprintf("node2 durable voter again after **%.2f s**", back.Seconds())
		if err != nil {
			t.Errorf("node2 not durable voter again after its target returned: %v", err)
			m, r := storageMode(out2b)
			backText = fmt.Sprintf("node2 **NOT durable voter again within %.0f s** (still %s/%s)", back.Seconds(), m, r)
		}
		_, accountErr := consoleUntil(ctx, dir, "node2", "users", time.Minute, func(s string) bool { return strings.Contains(s, "dora") })
		if accountErr != nil {
			t.Errorf("the account written while node2's target was frozen is not on node2: %v", accountErr)
		}
		t.Logf("node2 demoted %.2f s after its target froze; others %v; back durable voter %.2f s after the target returned; lost %v\n%s\n%s", demoted.Seconds(), others, back.Seconds(), lost, out2, out2b)
		if regErr != nil || strings.Contains(regOut, "error") {
			t.Errorf("a write (register) while node2's target was frozen: %v %s", regErr, regOut)
		}
		if len(lost) > 0 {
			t.Errorf("acknowledged messages lost: %v", lost)
			t.Logf("client events around them:\n%s\n%s", clientTrace(alice, lost), clientTrace(bob, lost))
		}
		recordScenario(t, "d", "(d) One node's iSCSI target frozen → that node demotes, the others unaffected", []string{
			"- 3 nodes (direct PVH boot, TCG, lab TCG timing and node loss after 4 s of silence, bus links redialed after 3 s), each on its own tgtd LUN; alice on node1 and bob on node3 exchange numbered messages every 100 ms (XEP-0198, resumed through another node if a connection fails)",
			fmt.Sprintf("- node2's tgtd frozen (SIGSTOP): node2 reported `ram-only`, non-voter after **%.2f s** (as seen by polling its console; the initiator's task timeout is 3 s)", demoted.Seconds()),
			fmt.Sprintf("- the others meanwhile: node1 %s, node3 %s; an account registered during the freeze committed (`register`: %s)", others["node1"], others["node3"], okText(regErr == nil && !strings.Contains(regOut, "error"))),
			fmt.Sprintf("- messages acknowledged alice→bob %d, bob→alice %d (stanzas acknowledged after the freeze: alice %d, bob %d); **lost: %d**; client outages (resumed through another node): %s", acks[0], acks[1], a1-a0, b1-b0, len(lost), outs),
			fmt.Sprintf("- target frozen %.0f s in all (traffic for the first %.0f s, then the delivery check); thawed: %s; the account written during the freeze on node2: %s (host load average %s)", frozen.Seconds(), held.Seconds(), backText, okText(accountErr == nil), loadAvg()),
			verdictLine(t),
		})
	})

	t.Run("c-all-targets-stopped", func(t *testing.T) {
		_, n0 := outagesSince(0)
		stop := make(chan struct{})
		wg := traffic(alice, bob, 100*time.Millisecond, stop)
		time.Sleep(2 * time.Second)
		_, a0 := alice.counts()
		_, b0 := bob.counts()
		t0 := time.Now()
		if out, err := lab.Control(dir, "storage stop"); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("storage stop: %v %s", err, out)
		}
		var degraded time.Duration
		modes := map[string]string{}
		for _, n := range nodes {
			_, out, err := waitStorage(ctx, dir, n, 3*time.Minute, func(m, _ string) bool { return m == "degraded-ram" })
			if err != nil {
				t.Errorf("%s not degraded-ram with every target stopped: %v", n, err)
			}
			m, r := storageMode(out)
			modes[n] = m + "/" + r
			if degraded == 0 {
				degraded = time.Since(t0)
			}
		}
		all := time.Since(t0)
		// Still serving: a durable-table write commits in RAM, messages flow.
		regOut, regErr := lab.Run(ctx, nodeSock(dir, "node1"), "register erin secret-erin")
		statusOut, _ := lab.Run(ctx, nodeSock(dir, "node1"), "storage")
		time.Sleep(3 * time.Second)
		t1 := time.Now()
		if out, err := lab.Control(dir, "storage start"); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("storage start: %v %s", err, out)
		}
		var back time.Duration
		var notBack []string
		for _, n := range nodes {
			if _, out, err := waitStorage(ctx, dir, n, 5*time.Minute, func(m, _ string) bool { return m == "durable" }); err != nil {
				t.Errorf("%s not durable after the targets returned: %v\n%s", n, err, out)
				m, r := storageMode(out)
				notBack = append(notBack, n+" "+m+"/"+r)
			}
		}
		back = time.Since(t1)
		backText := fmt.Sprintf("every node `durable` again after **%.2f s**", back.Seconds())
		if len(notBack) > 0 {
			backText = fmt.Sprintf("**NOT every node durable again** after %.0f s: %s", back.Seconds(), strings.Join(notBack, ", "))
		}
		time.Sleep(2 * time.Second)
		close(stop)
		wg.Wait()
		lost, acks := checkDelivery(t, alice, bob)
		_, a1 := alice.counts()
		_, b1 := bob.counts()
		outs, _ := outagesSince(n0)
		if a1 == a0 || b1 == b0 {
			t.Errorf("the servers acknowledged nothing more after the targets stopped (alice %d→%d, bob %d→%d): not serving", a0, a1, b0, b1)
		}
		missingErin := 0
		for _, n := range nodes {
			if _, err := consoleUntil(ctx, dir, n, "users", time.Minute, func(s string) bool { return strings.Contains(s, "erin") }); err != nil {
				t.Errorf("the account written in degraded-ram is missing on %s: %v", n, err)
				missingErin++
			}
		}
		if regErr != nil || strings.Contains(regOut, "error") {
			t.Errorf("a write in degraded-ram: %v %s", regErr, regOut)
		}
		if len(lost) > 0 {
			t.Errorf("acknowledged messages lost: %v", lost)
			t.Logf("client events around them:\n%s\n%s", clientTrace(alice, lost), clientTrace(bob, lost))
		}
		t.Logf("degraded-ram first after %.2f s, all after %.2f s: %v; durable again %.2f s after the targets returned; lost %v\nnode1 storage in degraded-ram:\n%s", degraded.Seconds(), all.Seconds(), modes, back.Seconds(), lost, statusOut)
		recordScenario(t, "c", "(c) The iSCSI targets stopped for all nodes → degraded-ram, still serving, nothing lost", []string{
			"- 3 nodes (direct PVH boot, TCG, lab TCG timing and node loss after 4 s of silence), each on its own tgtd LUN; every tgtd killed at once (the one iSCSI box of a site going away); alice on node1 and bob on node3 exchange numbered messages every 100 ms (XEP-0198, resumed through another node if a connection fails)",
			fmt.Sprintf("- `degraded-ram` on the first node after **%.2f s**, on all three after %.2f s (%s)", degraded.Seconds(), all.Seconds(), fmtModes(modes)),
			fmt.Sprintf("- still serving: stanzas the servers acknowledged from the targets' stop to the end: alice %d, bob %d (0: stopped serving); an account registered in degraded-ram: %s", a1-a0, b1-b0, okText(regErr == nil && !strings.Contains(regOut, "error"))),
			fmt.Sprintf("- targets restarted: %s; the account written in degraded-ram on all three: %s", backText, okText(missingErin == 0)),
			fmt.Sprintf("- messages acknowledged alice→bob %d, bob→alice %d (both phases); **lost: %d**; client outages (resumed through another node): %s (host load average %s)", acks[0], acks[1], len(lost), outs, loadAvg()),
			verdictLine(t),
		})
	})
}

// verdictLine is a scenario's pass/fail line: every check made so far.
func verdictLine(t *testing.T) string {
	if t.Failed() {
		return "- **Verdict: FAILED** (the failed checks are in the test's output)"
	}
	return "- **Verdict: passed**"
}

func okText(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}

func fmtModes(m map[string]string) string {
	var s []string
	for _, n := range []string{"node1", "node2", "node3"} {
		s = append(s, n+" "+m[n])
	}
	return strings.Join(s, ", ")
}
