//go:build integration

package server_test

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"xedge/discovery/dns/bindtest"
	"xedge/xmppd/internal/testenv"
)

// freeDNSAddr returns ip:port free for UDP and TCP a moment ago.
func freeDNSAddr(t *testing.T, ip string) string {
	t.Helper()
	for range 50 {
		a := testenv.FreeAddr(t, ip)
		if u, err := net.ListenPacket("udp", a); err == nil {
			u.Close()
			return a
		}
	}
	t.Fatal("no free UDP+TCP port")
	return ""
}

// clientTargets asks addr for the _xmpp-client._tcp SRV targets' node names (sorted).
func clientTargets(addr, netw string) ([]string, error) {
	ts, err := bindtest.Targets(addr, netw, "_xmpp-client._tcp.example.org.")
	for i := range ts {
		ts[i] = strings.TrimSuffix(ts[i], ".node.example.org.")
	}
	return ts, err
}

// TestDNSClusterConvergence: three clustered xmppd (gossip membership) each
// serve the zone and the raft leader keeps a real BIND 9 current. The leader
// is SIGKILLed: gossip declares it failed, the survivors' embedded servers
// drop it, a new leader is elected and removes it from BIND. Measured from the
// kill and from gossip's failure declaration; the DNS part must take ≤ 2 s.
func TestDNSClusterConvergence(t *testing.T) {
	b := bindtest.Start(t, "example.org")
	key := testenv.WriteClusterKey(t)
	dir := t.TempDir()
	names := []string{"dns-a", "dns-b", "dns-c"}
	ips := []string{"127.0.0.61", "127.0.0.62", "127.0.0.63"}
	var addrs, seeds, dnsAddrs []string
	for _, ip := range ips {
		a := freePortPair(t, ip)
		addrs = append(addrs, a)
		seeds = append(seeds, gossipAddrOf(a))
		dnsAddrs = append(dnsAddrs, freeDNSAddr(t, ip))
	}
	var opts []testenv.Options
	for i, name := range names {
		args := append(testenv.ClusterNodeArgs(name, addrs[i], key, fmt.Sprintf("file:%s/%s.img?size=%d", dir, name, 64<<20)), testenv.FastRaftArgs...)
		args = append(args, "--discover", "serf", "--seeds", strings.Join(seeds, ","), "--discover-window", "1s",
			"--domain", "example.org", "--c2s", testenv.FreeAddr(t, ips[i]),
			"--dns-listen", dnsAddrs[i], "--dns-update", b.Addr, "--dns-tsig-key-file", b.KeyFile,
			"--dns-load-min", "3", "--dns-load-interval", "1s") // small numbers for the loaded rule
		opts = append(opts, testenv.Options{NoTLSListener: true, Args: args})
	}
	servers := testenv.StartMany(t, opts...)

	// Every embedded server and BIND list the three nodes.
	want := strings.Join(names, ",")
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range append(append([]string(nil), dnsAddrs...), b.Addr) {
		for {
			got, err := clientTargets(a, "udp")
			if err == nil && strings.Join(got, ",") == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s lists %v (err %v), want %s\n--- dns-a ---\n%s", a, got, err, want, servers[0].Logs())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got := digShort(t, b.Addr, "dns-b.node.example.org", "A"); strings.Join(got, ",") != "127.0.0.62" {
		t.Fatalf("BIND: dns-b A %q", got)
	}
	st, err := servers[0].StorageStatus()
	if err != nil || st.Leader == "" {
		t.Fatalf("no leader: %+v %v", st, err)
	}
	li := -1
	for i, n := range names {
		if n == st.Leader {
			li = i
		}
	}
	if li < 0 {
		t.Fatalf("leader %q is not one of %v", st.Leader, names)
	}
	if d := ctlDNS(t, servers[li]); d.Update == nil || !d.Update.ThisNode {
		t.Fatalf("the leader %s does not push: %+v", st.Leader, d.Update)
	}
	var survivors []int
	for i := range names {
		if i != li {
			survivors = append(survivors, i)
		}
	}
	rest := []string{}
	for _, i := range survivors {
		rest = append(rest, names[i])
	}
	wantRest := strings.Join(rest, ",")

	c2sOf := func(i int) string {
		for j, a := range opts[i].Args {
			if a == "--c2s" {
				return opts[i].Args[j+1]
			}
		}
		return ""
	}

	// Live connection counts steer: six sessions on one node make it loaded
	// (6 > 1.5 x the average of 2, and 4 above it), so its SRV priority steps
	// back to 25 and its weight falls; when they close it returns to 15.
	busy := survivors[1]
	servers[busy].Register(t, "u", "secret")
	var sessions []*testenv.Raw
	for i := range 6 {
		r := testenv.Dial(t, c2sOf(busy))
		r.StartTLS("example.org")
		r.LoginPlain("example.org", "u", "secret", fmt.Sprintf("r%d", i))
		sessions = append(sessions, r)
	}
	busyTarget := names[busy] + ".node.example.org."
	waitPrio := func(prio uint16, what string) {
		t.Helper()
		start := time.Now()
		for {
			p, err := srvPriority(b.Addr, busyTarget)
			if err == nil && p == prio {
				t.Logf("%s: %s at priority %d in BIND after %v", what, names[busy], prio, time.Since(start).Round(time.Millisecond))
				return
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s: %s priority %d (err %v) in BIND, want %d", what, names[busy], p, err, prio)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitPrio(25, "6 sessions")
	// The busy node's own view follows the session counts the cluster streams to
	// it; BIND's copy came from the leader, which may have seen them first.
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		d := ctlDNS(t, servers[busy])
		if strings.Contains(fmt.Sprint(d.Targets), "loaded") {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("xmppctl dns on %s does not say loaded 10 s after BIND had priority 25: %+v", names[busy], d.Targets)
			break
		}
	}
	for _, r := range sessions {
		r.Drop()
	}
	waitPrio(15, "sessions closed")

	// Kill the leader (power loss) and time each answer.
	kill := time.Now()
	syscall.Kill(servers[li].PID(), syscall.SIGKILL)
	var detected, served, pushed time.Duration
	deadline = kill.Add(20 * time.Second)
	for (detected == 0 || served == 0 || pushed == 0) && time.Now().Before(deadline) {
		now := time.Since(kill)
		if detected == 0 {
			if v := gossipView(t, servers[survivors[0]]); v[names[li]].State == "failed" || v[names[li]].State == "left" {
				detected = now
			}
		}
		if served == 0 {
			ok := true
			for _, i := range survivors {
				got, err := clientTargets(dnsAddrs[i], "udp")
				ok = ok && err == nil && strings.Join(got, ",") == wantRest
			}
			if ok {
				served = now
			}
		}
		if pushed == 0 {
			if got, err := clientTargets(b.Addr, "tcp"); err == nil && strings.Join(got, ",") == wantRest {
				pushed = now
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("leader %s SIGKILLed: gossip declared it failed after %v; survivors' embedded answers dropped it after %v; BIND after %v (new leader elected and pushed)",
		names[li], detected.Round(time.Millisecond), served.Round(time.Millisecond), pushed.Round(time.Millisecond))
	if detected == 0 || served == 0 || pushed == 0 {
		t.Fatalf("not converged within 20 s (detected %v, served %v, pushed %v)\n--- %s ---\n%s", detected, served, pushed, names[survivors[0]], servers[survivors[0]].Logs())
	}
	// The DNS part: from the membership change (gossip's declaration) to the
	// answers. Polling granularity of this loop is ~10 ms plus one gossip call.
	if served-detected > 2*time.Second || pushed-detected > 2*time.Second {
		t.Errorf("membership change -> DNS: served %v, BIND %v after detection; want <= 2 s", served-detected, pushed-detected)
	}
	if got := digShort(t, b.Addr, names[li]+".node.example.org", "A"); len(got) != 0 {
		t.Errorf("BIND still has the killed node's A record: %q", got)
	}
	// The killed node restarts: it is published again, and only once its
	// client port accepts connections (never a target that refuses).
	bin, _ := testenv.Binaries(t)
	cmd := exec.Command(bin, append([]string{"--data", servers[li].Data, "--admin-socket", filepath.Join(t.TempDir(), "admin.sock"),
		"--c2s-tls", "", "--log-level", "warn"}, opts[li].Args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-waited
		}
	})
	deadline = time.Now().Add(30 * time.Second)
	for {
		if got, err := clientTargets(b.Addr, "tcp"); err == nil && strings.Join(got, ",") == want {
			c, err := net.DialTimeout("tcp", c2sOf(li), time.Second)
			if err != nil {
				t.Fatalf("%s is back in BIND but its client port refuses: %v", names[li], err)
			}
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not back in BIND 30 s after its restart", names[li])
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Draining a node steps its SRV records back to the last priority on every
	// server (clients that ignore weights follow priorities); undraining
	// brings it back.
	dn := survivors[0]
	for _, step := range []struct {
		cmd  string
		prio uint16
	}{{"drain", 35}, {"undrain", 15}} {
		if out, errOut, code := servers[dn].Ctl("cluster", step.cmd); code != 0 {
			t.Fatalf("cluster %s: %s %s", step.cmd, out, errOut)
		}
		start := time.Now()
		for _, a := range []string{dnsAddrs[survivors[1]], b.Addr} {
			for {
				if p, err := srvPriority(a, names[dn]+".node.example.org."); err == nil && p == step.prio {
					break
				}
				if time.Since(start) > 5*time.Second {
					t.Fatalf("after %s, %s still does not give %s priority %d", step.cmd, a, names[dn], step.prio)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		t.Logf("%s %s -> priority %d in the other node's answer and in BIND after %v", step.cmd, names[dn], step.prio, time.Since(start).Round(time.Millisecond))
	}

	// The new leader says it pushes and the last push was verified.
	st, _ = servers[survivors[0]].StorageStatus()
	for _, i := range survivors {
		if names[i] == st.Leader {
			d := ctlDNS(t, servers[i])
			if d.Update == nil || !d.Update.ThisNode || (d.Update.LastResult != "ok" && d.Update.LastResult != "in-sync") {
				t.Errorf("new leader %s: %+v", names[i], d.Update)
			}
		}
	}
}

// srvPriority returns the priority of target in addr's _xmpp-client._tcp answer.
func srvPriority(addr, target string) (uint16, error) {
	srvs, err := bindtest.SRV(addr, "tcp", "_xmpp-client._tcp.example.org.")
	for _, s := range srvs {
		if s.Target == target {
			return s.Priority, nil
		}
	}
	if err == nil {
		err = fmt.Errorf("%s not in the answer", target)
	}
	return 0, err
}
