//go:build vmtest

package vmtest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/build/lab"
)

// TestScenarioVIPFailover is scenario (b): three clustered nodes share the VIP
// 10.77.0.100; alice is connected through the VIP with resumable XEP-0198 stream
// management, bob directly to another node, and they exchange numbered messages.
// The node alice's connection lands on (the VIP holder) is killed like a power
// loss. alice's client sees its connection fail, reconnects to the VIP — now on a
// survivor — and resumes its session there; the figure is the time from the kill
// to the resumed session (target ≤ 2 s), and every message either server
// acknowledged must reach the other side.
func TestScenarioVIPFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// Failure detection closer to xmppd's default (probe 200 ms, ~1 s) than the lab's
	// TCG timing (probe 1 s × 4: ~3 s before anyone may take the VIP, more than
	// the 2 s target): probe 400 ms, suspicion × 3. The VIP holder itself is
	// watched through its adverts (keepalived's master down timer): one every
	// 200 ms (xmppd's default), dead after 5 intervals (1 s; xmppd's default is
	// 4): under TCG at host load ~5 the survivors saw gaps of up to 0.54 s
	// between a live holder's adverts, which left 0.26 s below 0.8 s. The test
	// reports the longest gap each survivor saw before the kill (the margin
	// against a false failover).
	dir, st := scenarioLab(t, ctx, 3, false, "vip: "+scenarioVIP+"/24\nvip-interface: eth0\ngossip-probe-interval: 400ms\ngossip-suspicion-mult: 3\n"+
		"vip-advert-interval: "+vipAdvertInterval.String()+"\nvip-advert-dead-mult: "+strconv.Itoa(vipAdvertDeadMult)+"\n")
	nodes := []string{"node1", "node2", "node3"}
	registerUsers(t, ctx, dir, nodes, "alice", "bob")
	out, err := consoleUntil(ctx, dir, "node1", "vip", 3*time.Minute, func(s string) bool { return vipHolderRe.MatchString(s) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node1 vip:\n%s", out)

	alice := newSMClient("alice", st.NetNS, scenarioVIP+":5222", "alice", "phone", t.Logf)
	// A client retries its first login (bounded); each failure is logged.
	for i := 1; ; i++ {
		err := alice.login(30 * time.Second)
		if err == nil {
			break
		}
		t.Logf("alice through the VIP, attempt %d (VIP neighbour %q): %v", i, vipHolderMAC(st.NetNS), err)
		if i == 20 {
			t.Fatalf("alice cannot log in through the VIP")
		}
		time.Sleep(2 * time.Second)
	}
	holder := vipHolderMAC(st.NetNS)
	if holder == "" {
		t.Fatalf("no neighbour entry for the VIP after alice's login")
	}
	other := "node1"
	if holder == "node1" {
		other = "node2"
	}
	bobAddr := fmt.Sprintf("10.77.0.%d:5222", 10+int(other[4]-'0'))
	bob := newSMClient("bob", st.NetNS, bobAddr, "bob", "desk", t.Logf)
	if err := bob.login(30 * time.Second); err != nil {
		t.Fatalf("bob on %s: %v", other, err)
	}
	t.Cleanup(func() { alice.close(); bob.close() })
	stop := make(chan struct{})
	wg := traffic(alice, bob, 100*time.Millisecond, stop)
	stopped := false
	stopTraffic := func() {
		if !stopped {
			close(stop)
			wg.Wait()
			stopped = true
		}
	}
	defer stopTraffic()
	// Before the kill: both directions are served, and the holder has had time to
	// publish alice's connection (its rows are refreshed every second).
	time.Sleep(4 * time.Second)
	// A stalled acknowledgement is a failure, but the failover is still measured.
	if err := alice.syncAcks(30 * time.Second); err != nil {
		t.Errorf("before the kill: %v", err)
	}
	if alice.received() == 0 || bob.received() == 0 {
		t.Errorf("no messages before the kill (alice got %d, bob got %d)", alice.received(), bob.received())
	}
	sentBefore, _ := alice.counts()
	t.Logf("alice on the VIP via %s, bob on %s; killing %s (alice sent %d stanzas so far)", holder, other, holder, sentBefore)
	// The survivors' view of the holder's adverts before the kill: the longest
	// gap and any silence (a false failover) so far.
	var gaps []string
	falseSilence := false
	for _, n := range nodes {
		if n == holder {
			continue
		}
		out, _ := lab.Run(ctx, nodeSock(dir, n), "vip")
		gap, silences, ok := advertGap(out, holder)
		if !ok {
			t.Logf("%s vip (no adverts of %s in it):\n%s", n, holder, out)
			gaps = append(gaps, n+": none heard")
			continue
		}
		gaps = append(gaps, fmt.Sprintf("%s: %s", n, gap))
		if silences != "-" && silences != "0" {
			falseSilence = true
			t.Errorf("%s found the live holder %s silent %s times before the kill (a false failover):\n%s", n, holder, silences, out)
		}
	}
	t.Logf("longest gap between %s's adverts before the kill: %s", holder, strings.Join(gaps, ", "))
	oldMAC := fmt.Sprintf("52:54:00:77:01:%02x", int(holder[4]-'0'))
	wire, werr := startVIPWire(st.NetNS, netip.MustParseAddr(scenarioVIP), 5222)
	if werr != nil {
		t.Logf("no wire breakdown: %v", werr)
	}

	dead := alice.deadCh()
	t0 := time.Now()
	alice.event("killing %s", holder)
	if err := lab.Kill(dir, holder); err != nil {
		t.Fatal(err)
	}
	// alice's client notices through a reset (the new holder's tickle) or its
	// own check: an <r/> unanswered for 3 s.
	var detect time.Duration
	how := "connection reset"
	for detect == 0 {
		select {
		case <-dead:
			detect = time.Since(t0)
		case <-time.After(100 * time.Millisecond):
			if alice.stalled(3 * time.Second) {
				how = "an <r/> unanswered for 3 s"
				alice.abort()
				<-dead
				detect = time.Since(t0)
			} else if time.Since(t0) > 2*time.Minute {
				t.Fatal("alice's connection neither failed nor stalled within 2 minutes of the kill")
			}
		}
	}
	attempts, err := alice.reconnect(3 * time.Minute)
	if err != nil {
		t.Fatalf("after the kill (%s detected in %.2f s): %v", how, detect.Seconds(), err)
	}
	outage := time.Since(t0)
	newHolder := vipHolderMAC(st.NetNS)
	t.Logf("alice resumed on %s %.2f s after the kill (%s after %.2f s, %d attempts)", newHolder, outage.Seconds(), how, detect.Seconds(), attempts)
	// Service after the resume: a message from bob sent now reaches alice.
	time.Sleep(4 * time.Second)
	split := "(no capture)"
	if wire != nil {
		wire.stop()
		glog, _ := os.ReadFile(filepath.Join(dir, newHolder, "node.log"))
		split, _ = wire.breakdown(t0, oldMAC, detect, outage, string(glog))
		t.Logf("outage split (host clock): %s", split)
	}
	stopTraffic()
	lost, acks := checkDelivery(t, alice, bob)
	firstAfter := time.Duration(0)
	alice.mu.Lock()
	for _, at := range alice.firstAt {
		if at.After(t0.Add(outage)) && (firstAfter == 0 || at.Sub(t0) < firstAfter) {
			firstAfter = at.Sub(t0)
		}
	}
	alice.mu.Unlock()
	dupA, dupB := alice.duplicates(), bob.duplicates()
	t.Logf("messages acknowledged: alice→bob %d, bob→alice %d; lost %d %v; duplicates alice %d, bob %d; first message to alice after the resume at %.2f s",
		acks[0], acks[1], len(lost), lost, dupA, dupB, firstAfter.Seconds())
	verdict := "met"
	if outage > 2*time.Second {
		verdict = "NOT met on this run"
	}
	vipOut, _ := lab.Run(ctx, nodeSock(dir, other), "vip")
	recordScenario(t, "b", "(b) A client on the VIP survives the VIP holder's death", []string{
		fmt.Sprintf("- 3 nodes (direct PVH boot, TCG, lab TCG timing but gossip probe 400 ms × 3; VIP adverts every %s, a holder silent for %d of them loses the VIP), VIP %s/24 on eth0; alice on the VIP (STARTTLS, SCRAM-SHA-1, XEP-0198 resumable), bob directly on %s, numbered messages both ways every 100 ms", vipAdvertInterval, vipAdvertDeadMult, scenarioVIP, other),
		fmt.Sprintf("- VIP holder %s killed (SIGKILL of qemu): alice's client noticed (%s) after **%.2f s**; resumed its session through the VIP on **%s** after **%.2f s** without service (target ≤ 2 s: %s; %d resume attempts; host load average %s)",
			holder, how, detect.Seconds(), newHolder, outage.Seconds(), verdict, attempts, loadAvg()),
		fmt.Sprintf("- where the time went: %s", split),
		fmt.Sprintf("- longest gap between %s's adverts (every %s, dead after %d) each survivor saw before the kill: %s%s", holder, vipAdvertInterval, vipAdvertDeadMult, strings.Join(gaps, ", "), map[bool]string{true: " (**a survivor found the live holder silent**)", false: "; no false silence"}[falseSilence]),
		fmt.Sprintf("- first message from bob delivered to alice after the resume: %.2f s after the kill", firstAfter.Seconds()),
		fmt.Sprintf("- acknowledged messages: alice→bob %d, bob→alice %d; **lost: %d**; duplicates (at-least-once resends): %d to alice, %d to bob", acks[0], acks[1], len(lost), dupA, dupB),
		vipVerdict(outage, lost, t.Failed()),
	})
	if len(lost) > 0 {
		t.Errorf("acknowledged messages lost: %v (the kill at %s UTC)", lost, t0.UTC().Format("15:04:05.000000"))
		t.Logf("client events around them:\n%s\n%s", clientTrace(alice, lost), clientTrace(bob, lost))
	}
	if !strings.Contains(vipOut, scenarioVIP) {
		t.Logf("%s vip after the kill:\n%s", other, vipOut)
	}
	if b := os.Getenv("XEDGE_VIP_BUDGET"); b != "" {
		if d, err := time.ParseDuration(b); err == nil && outage > d {
			t.Errorf("outage %.2f s over the %s budget", outage.Seconds(), d)
		}
	}
}

// vipAdvertInterval and vipAdvertDeadMult are (b)'s VIP advert timing.
const (
	vipAdvertInterval = 200 * time.Millisecond
	vipAdvertDeadMult = 5
)

// advertGap reads, from a node's `vip` output, the longest gap between node's
// adverts it heard and how often it found node silent.
func advertGap(out, node string) (gap, silences string, ok bool) {
	in := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "adverts heard") {
			in = true
			continue
		}
		f := strings.Fields(l)
		if in && len(f) >= 9 && f[0] == node {
			// node interval dead_interval last_ago count missed max_gap silent silences
			return f[6], f[8], true
		}
		if strings.HasPrefix(l, "own adverts") || strings.HasPrefix(l, "recent transitions") {
			in = false
		}
	}
	return "", "", false
}

// vipVerdict is (b)'s pass/fail line: zero acknowledged stanzas lost and service
// back within 2 s.
func vipVerdict(outage time.Duration, lost []string, failedBefore bool) string {
	var why []string
	if failedBefore {
		why = append(why, "a check before the failover's figures failed: see the test's log")
	}
	if len(lost) > 0 {
		why = append(why, fmt.Sprintf("acknowledged messages lost: %s", strings.Join(lost, ", ")))
	}
	if outage > 2*time.Second {
		why = append(why, fmt.Sprintf("outage %.2f s over 2 s", outage.Seconds()))
	}
	if len(why) == 0 {
		return "- **Verdict: passed** (nothing acknowledged lost, outage within 2 s)"
	}
	return "- **Verdict: FAILED** (" + strings.Join(why, "; ") + ")"
}
