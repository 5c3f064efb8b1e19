//go:build vmtest && scenarios

package vmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/build/lab"
)

// powerOnAgain boots lab node name again after its qemu exited (a reboot: qemu
// runs with -no-reboot), with the same MAC, tap name, directory and LUN, and the
// other nodes as seeds; lab.json gets the new PID so `lab down` stops it.
func powerOnAgain(ctx context.Context, dir, name string) (*lab.VM, error) {
	st, err := lab.LoadState(dir)
	if err != nil {
		return nil, err
	}
	n, err := st.Node(name)
	if err != nil {
		return nil, err
	}
	i := int(name[len(name)-1] - '0')
	key, err := os.ReadFile(filepath.Join(dir, "cluster.key"))
	if err != nil {
		return nil, err
	}
	var seeds []string
	for _, o := range st.Nodes {
		if o.Name != name {
			seeds = append(seeds, fmt.Sprintf("10.77.0.%d", 10+int(o.Name[len(o.Name)-1]-'0')))
		}
	}
	params := strings.TrimSpace(st.Params + " xedge.key=" + strings.TrimSpace(string(key)) + " xedge.seeds=" + strings.Join(seeds, ","))
	if st.Storage {
		params += " xedge.storage=" + lab.StorageURL(i)
	}
	tap, err := (&lab.NetNS{Name: st.NetNS}).OpenTap(fmt.Sprintf("tap%d", i))
	if err != nil {
		return nil, err
	}
	defer tap.Close() // qemu holds its own copy
	port, err := lab.FreePort()
	if err != nil {
		return nil, err
	}
	vm, err := lab.Start(ctx, lab.Config{Name: name, Kernel: st.Kernel, Initrd: st.Initrd, Params: params, Dir: n.Dir, Daemonize: true,
		NICs: []lab.NIC{{Kind: "tapfd", TapFile: tap, MAC: n.MAC}, {Kind: "user", Forwards: map[int]int{port: 5222}}}})
	if err != nil {
		return nil, err
	}
	n.PID, n.Port, n.Started = vm.PID, port, vm.Started
	b, _ := json.MarshalIndent(st, "", "  ")
	return vm, os.WriteFile(filepath.Join(dir, "lab.json"), b, 0o644)
}

// keepResumed resumes c whenever its connection fails or stalls, until stop; it
// records each outage (failure seen → session resumed).
type outages struct {
	mu   sync.Mutex
	list []string
	max  time.Duration
	errs []error
}

func keepResumed(c *smClient, stop <-chan struct{}, o *outages) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			dead := c.deadCh()
			select {
			case <-stop:
				return
			case <-dead:
			case <-time.After(200 * time.Millisecond):
				if !c.stalled(c.stallAfter) {
					continue
				}
				c.abort()
				<-dead
			}
			t0 := time.Now()
			attempts, err := c.reconnect(3 * time.Minute)
			how := ""
			if err != nil && strings.Contains(err.Error(), "resume refused") {
				// The server no longer has the session: a client logs in
				// anew (what the server had not acknowledged is resent;
				// messages to it meanwhile wait in offline storage).
				var n int
				n, err = c.relogin(3 * time.Minute)
				attempts += n
				how = ", new session: resume refused"
			}
			d := time.Since(t0)
			o.mu.Lock()
			if err != nil {
				o.errs = append(o.errs, err)
				o.mu.Unlock()
				return
			}
			o.list = append(o.list, fmt.Sprintf("%s %.2f s (%d attempts%s)", c.name, d.Seconds(), attempts, how))
			o.max = max(o.max, d)
			o.mu.Unlock()
		}
	}()
	return &wg
}

// TestScenarioRollingReboot is scenario (f): every node of a three-node cluster is
// rebooted in turn (`reboot` on its console: init stops xmppd cleanly, the node
// powers on again with its LUN), while alice and bob, with resumable stream
// management that resumes through another node, exchange messages every 50 ms.
// No message either server acknowledged may be lost.
func TestScenarioRollingReboot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	dir, st := scenarioLab(t, ctx, 3, true, tcgNodeLoss)
	nodes := []string{"node1", "node2", "node3"}
	registerUsers(t, ctx, dir, nodes, "alice", "bob")
	// Clients start on node1 and node3 and, when their node goes down, resume
	// through the next node that answers (as a client with SRV targets does).
	addrs := []string{"10.77.0.11:5222", "10.77.0.12:5222", "10.77.0.13:5222"}
	alice := newSMClient("alice", st.NetNS, addrs[0], "alice", "phone", t.Logf)
	alice.fallbacks = addrs[1:]
	bob := newSMClient("bob", st.NetNS, addrs[2], "bob", "desk", t.Logf)
	bob.fallbacks = addrs[:2]
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
	t.Cleanup(func() { alice.close(); bob.close() })
	stop := make(chan struct{})
	o := &outages{}
	wgA, wgB := keepResumed(alice, stop, o), keepResumed(bob, stop, o)
	wgT := traffic(alice, bob, 50*time.Millisecond, stop)
	stopAll := sync.OnceFunc(func() { close(stop); wgT.Wait(); wgA.Wait(); wgB.Wait() })
	defer stopAll()
	time.Sleep(3 * time.Second)

	var steps []string
	start := time.Now()
	for _, n := range nodes {
		t0 := time.Now()
		alice.event("reboot %s", n)
		bob.event("reboot %s", n)
		// `reboot` stops xmppd (SIGTERM: drain, sessions left to peers), then
		// qemu exits (-no-reboot); the box powers on again at once.
		if c, err := lab.DialConsole(ctx, nodeSock(dir, n)); err != nil {
			t.Fatalf("%s console: %v", n, err)
		} else {
			err = c.Send("reboot")
			time.Sleep(500 * time.Millisecond)
			c.Close()
			if err != nil {
				t.Fatalf("%s: reboot: %v", n, err)
			}
		}
		s, _ := lab.LoadState(dir)
		ns, _ := s.Node(n)
		for lab.Alive(ns.PID, ns.Dir) && time.Since(t0) < 2*time.Minute {
			time.Sleep(200 * time.Millisecond)
		}
		if lab.Alive(ns.PID, ns.Dir) {
			t.Fatalf("%s did not power off within 2 minutes of `reboot`", n)
		}
		down := time.Since(t0)
		if _, err := powerOnAgain(ctx, dir, n); err != nil {
			t.Fatalf("%s: power on again: %v", n, err)
		}
		if line, err := lab.WaitConsole(ctx, filepath.Join(ns.Dir, "console.log"), lab.ReadyOrMaint, 6*time.Minute); err != nil || !strings.HasPrefix(line, "ready") {
			t.Fatalf("%s after its reboot: %q %v", n, line, err)
		}
		ready := time.Since(t0)
		// Back in the cluster: durable on its LUN and a voter again, before the next.
		if _, out, err := waitStorage(ctx, dir, n, 5*time.Minute, func(m, r string) bool { return m == "durable" && r == "voter" }); err != nil {
			t.Fatalf("%s not back as a durable voter: %v\n%s", n, err, out)
		}
		back := time.Since(t0)
		steps = append(steps, fmt.Sprintf("%s: stopped and off %.1f s, serving again %.1f s, durable voter %.1f s after `reboot`", n, down.Seconds(), ready.Seconds(), back.Seconds()))
		t.Logf("%s", steps[len(steps)-1])
		time.Sleep(3 * time.Second)
	}
	total := time.Since(start)
	stopAll()
	lost, acks := checkDelivery(t, alice, bob)
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, err := range o.errs {
		t.Error(err)
	}
	t.Logf("rolling reboot %.1f s; outages %v; acknowledged alice→bob %d, bob→alice %d; lost %v", total.Seconds(), o.list, acks[0], acks[1], lost)
	if len(lost) > 0 {
		t.Errorf("acknowledged messages lost: %v", lost)
		t.Logf("client events around them:\n%s\n%s", clientTrace(alice, lost), clientTrace(bob, lost))
	}
	recordScenario(t, "f", "(f) Rolling reboot of every node under message load", []string{
		"- 3 nodes (direct PVH boot, TCG, lab TCG timing and node loss after 4 s of silence), each on its own tgtd LUN; alice (node1) and bob (node3) with XEP-0198 resumable sessions that resume through the next node when theirs goes down, a message each way every 50 ms; each node in turn: `reboot` on its console, powered on again, waited for until it is a durable voter again",
		"- per node: " + strings.Join(steps, "; "),
		fmt.Sprintf("- whole rolling reboot: %.1f s; client outages (failure seen → resumed on another node): %s; longest %.2f s", total.Seconds(), orNone(o.list), o.max.Seconds()),
		fmt.Sprintf("- acknowledged messages: alice→bob %d, bob→alice %d; **lost: %d**; duplicates %d/%d (host load average %s)", acks[0], acks[1], len(lost), alice.duplicates(), bob.duplicates(), loadAvg()),
		verdictLine(t),
	})
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
