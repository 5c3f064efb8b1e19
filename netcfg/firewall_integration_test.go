//go:build integration && linux

package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestFirewallBetweenNamespaces applies the firewall in a server namespace and checks
// it with real connection attempts from a client inside the cluster subnet (c) and
// one outside it (out, same segment, another subnet): XMPP and DNS (UDP) open to
// both, the cluster port only from the cluster subnet, anything else (TCP or
// UDP) dropped, new connections
// per source rate-limited (the limited source is refused service, the other source
// still gets in); a second Apply changes nothing (iptables-save identical); a
// foreign rule and chain survive Apply and Remove; a rule removed by hand is
// restored by the next Apply.
func TestFirewallBetweenNamespaces(t *testing.T) {
	l := newLAN(t, "fw", "10.55.0")
	srv := l.add("s", 1)
	ipIn(t, l.ns("s"), "addr", "add", "10.56.0.1/24", "dev", "eth0")
	out := l.add("o", 2)
	ipIn(t, l.ns("o"), "addr", "flush", "dev", "eth0")
	ipIn(t, l.ns("o"), "addr", "add", "10.56.0.2/24", "dev", "eth0")
	_ = out

	// Listeners in the server namespace: XMPP, cluster, and an unlisted port.
	for _, port := range []int{5222, 7400, 9999} {
		var ln net.Listener
		if err := inNS(t, srv, func() error {
			var err error
			ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	// A foreign rule and chain that must survive.
	nsExec := func(args ...string) string {
		t.Helper()
		o, err := exec.Command("ip", append([]string{"netns", "exec", l.ns("s")}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v %s", args, err, o)
		}
		return string(o)
	}
	nsExec("iptables", "-N", "FOREIGN")
	nsExec("iptables", "-A", "INPUT", "-s", "192.0.2.1", "-j", "FOREIGN")

	spec := FirewallSpec{Open: []Port{{"tcp", 5222}, {"udp", 53}}, Cluster: []Port{{"tcp", 7400}},
		ClusterSubnets: []netip.Prefix{netip.MustParsePrefix("10.55.0.0/24")}, RatePerSource: 5, RateBurst: 5, DropOther: true}
	var fw *Firewall
	apply := func() (changed bool) {
		t.Helper()
		if err := inNS(t, srv, func() error {
			var err error
			if fw == nil {
				if fw, err = NewFirewall(nil); err != nil {
					return err
				}
			}
			changed, err = fw.Apply(spec)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return changed
	}
	if !apply() {
		t.Fatal("first Apply reported no change")
	}
	counters := regexp.MustCompile(`\[\d+:\d+\]`)
	save := func() string {
		var b strings.Builder
		for _, tool := range []string{"iptables-save", "ip6tables-save"} {
			o, _ := exec.Command("ip", "netns", "exec", l.ns("s"), tool).CombinedOutput()
			for _, line := range strings.Split(string(o), "\n") {
				if !strings.HasPrefix(line, "#") {
					b.WriteString(counters.ReplaceAllString(line, "") + "\n")
				}
			}
		}
		return b.String()
	}
	before := save()
	if apply() {
		t.Fatal("second Apply changed something")
	}
	if after := save(); after != before {
		t.Fatalf("second Apply changed the rules:\n%s\n---\n%s", before, after)
	}
	if !strings.Contains(before, "-A INPUT -s 192.0.2.1/32 -j FOREIGN") || !strings.Contains(before, ":FOREIGN") {
		t.Fatalf("foreign rule or chain lost:\n%s", before)
	}

	dial := func(from string, addr string) error {
		var err error
		if e := inNS(t, l.hosts[from], func() error {
			var c net.Conn
			c, err = net.DialTimeout("tcp", addr, 400*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return nil
		}); e != nil {
			t.Fatal(e)
		}
		return err
	}
	check := func(from, addr string, open bool) {
		t.Helper()
		err := dial(from, addr)
		if open && err != nil {
			t.Fatalf("%s -> %s: %v, want open", from, addr, err)
		}
		if !open && err == nil {
			t.Fatalf("%s -> %s connected, want dropped", from, addr)
		}
		if !open && !isTimeout(err) {
			t.Fatalf("%s -> %s: %v, want a timeout (dropped)", from, addr, err)
		}
	}
	check("c", "10.55.0.1:5222", true)
	check("o", "10.56.0.1:5222", true)
	check("c", "10.55.0.1:7400", true)
	check("o", "10.56.0.1:7400", false)
	check("o", "10.56.0.1:9999", false)
	check("c", "10.55.0.1:9999", false)

	// UDP: the DNS port (open) answers every source; another UDP port is dropped.
	for _, port := range []int{53, 9999} {
		var pc net.PacketConn
		if err := inNS(t, srv, func() error {
			var err error
			pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 64)
			for {
				n, a, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(buf[:n], a)
			}
		}()
	}
	udp := func(from, addr string) error {
		var err error
		if e := inNS(t, l.hosts[from], func() error {
			var c net.Conn
			if c, err = net.Dial("udp", addr); err != nil {
				return nil
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(400 * time.Millisecond))
			if _, err = c.Write([]byte("q")); err == nil {
				buf := make([]byte, 8)
				_, err = c.Read(buf)
			}
			return nil
		}); e != nil {
			t.Fatal(e)
		}
		return err
	}
	for _, from := range []string{"c", "o"} {
		addr := map[string]string{"c": "10.55.0.1:53", "o": "10.56.0.1:53"}[from]
		if err := udp(from, addr); err != nil {
			t.Fatalf("%s -> %s/udp (DNS, open): %v", from, addr, err)
		}
	}
	if err := udp("o", "10.56.0.1:9999"); !isTimeout(err) {
		t.Fatalf("o -> 10.56.0.1:9999/udp: %v, want no answer (dropped)", err)
	}

	// Rate limit: a burst of new connections from one source is cut off.
	ok := 0
	for i := 0; i < 20; i++ {
		if dial("o", "10.56.0.1:5222") == nil {
			ok++
		}
	}
	if ok >= 20 || ok == 0 {
		t.Fatalf("%d of 20 rapid connections from one source got in, want the limit to cut in", ok)
	}
	// Another source is not affected.
	check("c", "10.55.0.1:5222", true)
	t.Logf("rate limit: %d of 20 rapid connections from one source accepted", ok)

	// Drift: a rule removed by hand is put back.
	nsExec("iptables", "-D", ChainInput, "-p", "tcp", "--dport", "7400", "-j", "DROP")
	if !apply() {
		t.Fatal("Apply did not notice a removed rule")
	}
	if got := save(); got != before {
		t.Fatalf("rules not restored:\n%s", got)
	}

	if err := inNS(t, srv, func() error { return fw.Remove() }); err != nil {
		t.Fatal(err)
	}
	final := save()
	if strings.Contains(final, "XEDGE") || !strings.Contains(final, "-A INPUT -s 192.0.2.1/32 -j FOREIGN") {
		t.Fatalf("after Remove:\n%s", final)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
