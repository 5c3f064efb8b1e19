//go:build integration && linux

package netcfg

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// The Network tests run the DHCP client the way the appliance does: a whole process
// inside the client's network namespace. TestMain turns the test binary into that
// process when helperEnv is set; it reports events as JSON lines on stdout and stops
// (releasing its leases) when stdin closes.
const helperEnv = "XEDGE_NETCFG_NETWORK_HELPER"

type helperConfig struct {
	Links   []string `json:"links"`
	Timeout string   `json:"timeout"`
	Grace   string   `json:"grace"`
	Resolv  string   `json:"resolv"`
	Static  *Lease   `json:"static,omitempty"`
}

type helperEvent struct {
	Event string `json:"event"` // started, lease, expire, error
	Lease Lease  `json:"lease"`
	Err   string `json:"err,omitempty"`
}

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(networkHelper(cfg))
	}
	os.Exit(m.Run())
}

func networkHelper(raw string) int {
	var hc helperConfig
	if err := json.Unmarshal([]byte(raw), &hc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(e helperEvent) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(e)
	}
	timeout, _ := time.ParseDuration(hc.Timeout)
	grace, _ := time.ParseDuration(hc.Grace)
	n := NewNetwork(NetworkConfig{Links: hc.Links, Timeout: timeout, Grace: grace, Retry: 500 * time.Millisecond,
		Static: hc.Static, ResolvConf: hc.Resolv,
		OnLease:  func(l Lease) { emit(helperEvent{Event: "lease", Lease: l}) },
		OnExpire: func(l Lease) { emit(helperEvent{Event: "expire", Lease: l}) },
		Log:      slog.New(slog.NewTextHandler(os.Stderr, nil))})
	primary, err := n.Start(context.Background())
	if err != nil {
		emit(helperEvent{Event: "error", Err: err.Error()})
	} else {
		emit(helperEvent{Event: "started", Lease: primary})
	}
	io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.Stop(ctx)
	return 0
}

// helper runs the network helper in namespace ns and returns its event stream.
func startHelper(t *testing.T, ns string, hc helperConfig) <-chan helperEvent {
	t.Helper()
	b, _ := json.Marshal(hc)
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	logf, _ := os.Create(filepath.Join(t.TempDir(), "helper.log"))
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	events := make(chan helperEvent, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e helperEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				events <- e
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(8 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("helper log:\n%s", b)
		}
	})
	return events
}

// next returns the next event matching ok within d.
func next(t *testing.T, events <-chan helperEvent, d time.Duration, what string, ok func(helperEvent) bool) helperEvent {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case e, open := <-events:
			if !open {
				t.Fatalf("helper ended while waiting for %s", what)
			}
			if e.Event == "error" {
				t.Fatalf("helper: %s", e.Err)
			}
			if ok(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s within %s", what, d)
		}
	}
}

// dnsmasq starts dnsmasq (DHCP only) on iface in ns and returns a stop function.
func dnsmasq(t *testing.T, ns, iface, subnet, leases string, extra ...string) func() {
	t.Helper()
	args := append([]string{"netns", "exec", ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface=" + iface, "--bind-interfaces", "--user=root", "--log-facility=-", "--dhcp-authoritative",
		"--dhcp-range=" + subnet + ".50," + subnet + ".60,255.255.255.0,2m",
		"--dhcp-option=option:T1,3", "--dhcp-option=option:T2,5", "--dhcp-leasefile=" + leases}, extra...)
	cmd := exec.Command("ip", args...)
	logf, _ := os.OpenFile(leases+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
			logf.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestNetworkDnsmasq: two links, the second one's DHCP server appears only after
// boot. The first lease brings MTU, a classless static route, the default route, DNS
// (resolv.conf) and the hostname; both links renew at T1 (the late one too, which
// init's old loop left without renewals); when the server is down past T2 and comes
// back (a restart), the lease is rebound and the address kept.
func TestNetworkDnsmasq(t *testing.T) {
	l := newLAN(t, "dh", "10.43.0") // only for the namespace helpers and cleanup
	_ = l
	needRoot(t)
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq is missing: build/setup.sh installs dnsmasq-base")
	}
	cl, s1, s2 := l.ns("cl"), l.ns("s1"), l.ns("s2")
	addNetns(t, cl, s1, s2)
	ipIn(t, s1, "link", "add", "d0", "type", "veth", "peer", "name", "eth0", "netns", cl)
	ipIn(t, s2, "link", "add", "d1", "type", "veth", "peer", "name", "eth1", "netns", cl)
	ipIn(t, s1, "addr", "add", "10.44.0.1/24", "dev", "d0")
	ipIn(t, s2, "addr", "add", "10.45.0.1/24", "dev", "d1")
	ipIn(t, s1, "link", "set", "d0", "up")
	ipIn(t, s2, "link", "set", "d1", "up")
	ipIn(t, cl, "link", "set", "eth0", "address", "02:00:00:00:01:01")
	dir := t.TempDir()
	opts1 := []string{"--dhcp-option=option:mtu,1400", "--dhcp-option=option:dns-server,10.44.0.1",
		"--dhcp-option=option:domain-name,lab.example",
		"--dhcp-option=option:classless-static-route,192.168.77.0/24,10.44.0.1,0.0.0.0/0,10.44.0.1",
		"--dhcp-host=02:00:00:00:01:01,box9"}
	stop1 := dnsmasq(t, s1, "d0", "10.44.0", filepath.Join(dir, "leases1"), opts1...)

	resolv := filepath.Join(dir, "resolv.conf")
	events := startHelper(t, cl, helperConfig{Links: []string{"eth0", "eth1"}, Timeout: "8s", Grace: "500ms", Resolv: resolv})
	started := next(t, events, 12*time.Second, "start", func(e helperEvent) bool { return e.Event == "started" })
	p := started.Lease
	if p.Interface != "eth0" || !strings.HasPrefix(p.Addr.String(), "10.44.0.") || p.MTU != 1400 || p.Hostname != "box9" ||
		len(p.Routes) != 1 || p.Routes[0].Dst.String() != "192.168.77.0/24" || p.Renew != 3*time.Second || p.Rebind != 5*time.Second {
		t.Fatalf("primary lease %+v", p)
	}
	if out := ipIn(t, cl, "link", "show", "eth0"); !strings.Contains(out, "mtu 1400") {
		t.Fatalf("mtu not applied: %s", out)
	}
	routes := ipIn(t, cl, "route", "show")
	if !strings.Contains(routes, "192.168.77.0/24 via 10.44.0.1 dev eth0") || !strings.Contains(routes, "default via 10.44.0.1 dev eth0") {
		t.Fatalf("routes: %s", routes)
	}
	if b, _ := os.ReadFile(resolv); !strings.Contains(string(b), "nameserver 10.44.0.1") || !strings.Contains(string(b), "search lab.example") {
		t.Fatalf("resolv.conf: %q", b)
	}

	// The second link's server comes up after boot.
	dnsmasq(t, s2, "d1", "10.45.0", filepath.Join(dir, "leases2"))
	late := next(t, events, 15*time.Second, "a late lease on eth1", func(e helperEvent) bool {
		return e.Event == "lease" && e.Lease.Interface == "eth1" && e.Lease.Via == "discover"
	})
	next(t, events, 10*time.Second, "a renewal of the late lease", func(e helperEvent) bool {
		return e.Event == "lease" && e.Lease.Interface == "eth1" && e.Lease.Via == "renew" && e.Lease.Addr == late.Lease.Addr
	})
	last := next(t, events, 10*time.Second, "a renewal on eth0", func(e helperEvent) bool {
		return e.Event == "lease" && e.Lease.Interface == "eth0" && e.Lease.Via == "renew"
	})

	// Server restart: down past T2 (renewals and a rebind fail), then back.
	stop1()
	time.Sleep(time.Until(last.Lease.ObtainedAt.Add(5500 * time.Millisecond)))
	dnsmasq(t, s1, "d0", "10.44.0", filepath.Join(dir, "leases1"), opts1...)
	rebound := next(t, events, 15*time.Second, "a rebind after the server restart", func(e helperEvent) bool {
		return e.Event == "lease" && e.Lease.Interface == "eth0" && e.Lease.Via == "rebind"
	})
	if rebound.Lease.Addr != p.Addr {
		t.Fatalf("address changed across the server restart: %v -> %v", p.Addr, rebound.Lease.Addr)
	}
	if out := ipIn(t, cl, "addr", "show", "eth0"); !strings.Contains(out, p.Addr.String()) {
		t.Fatalf("address lost: %s", out)
	}
}

// TestNetworkLeaseExpiryAndStaticFallback: a 4 s lease (server4: dnsmasq's shortest
// lease is 2 minutes) that nobody renews comes off the link at expiry and the client
// starts over, getting a lease again when the server is back; a link with no DHCP
// server at all gets the static fallback address.
func TestNetworkLeaseExpiryAndStaticFallback(t *testing.T) {
	l := newLAN(t, "dx", "10.42.0")
	cl, sv := l.ns("cl"), l.ns("sv")
	addNetns(t, cl, sv)
	ipIn(t, sv, "link", "add", "d0", "type", "veth", "peer", "name", "eth0", "netns", cl)
	ipIn(t, sv, "link", "add", "d1", "type", "veth", "peer", "name", "eth1", "netns", cl)
	ipIn(t, sv, "addr", "add", "10.99.0.1/24", "dev", "d0")
	ipIn(t, sv, "link", "set", "d0", "up")
	ipIn(t, sv, "link", "set", "d1", "up")
	svh := nsHandle(t, sv)

	var answering atomic.Bool
	answering.Store(true)
	handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		if !answering.Load() {
			return
		}
		reply := dhcpv4.MessageTypeOffer
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
		case dhcpv4.MessageTypeRequest:
			reply = dhcpv4.MessageTypeAck
		default:
			return
		}
		r, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(reply), dhcpv4.WithYourIP(net.IPv4(10, 99, 0, 50)),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithLeaseTime(4), dhcpv4.WithServerIP(net.IPv4(10, 99, 0, 1)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 1))))
		if err != nil {
			return
		}
		conn.WriteTo(r.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 68})
	}
	var srv *server4.Server
	if err := inNS(t, svh, func() error {
		var err error
		srv, err = server4.NewServer("d0", &net.UDPAddr{IP: net.IPv4zero, Port: 67}, handler)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()

	static := &Lease{Interface: "eth1", Addr: netip.MustParsePrefix("10.98.0.7/24")}
	events := startHelper(t, cl, helperConfig{Links: []string{"eth1"}, Timeout: "1500ms", Grace: "200ms", Static: static})
	st := next(t, events, 10*time.Second, "static fallback", func(e helperEvent) bool { return e.Event == "started" })
	if st.Lease.Addr != static.Addr || !strings.Contains(ipIn(t, cl, "addr", "show", "eth1"), "10.98.0.7/24") {
		t.Fatalf("static fallback not applied: %+v", st.Lease)
	}

	events = startHelper(t, cl, helperConfig{Links: []string{"eth0"}, Timeout: "8s", Grace: "200ms"})
	first := next(t, events, 10*time.Second, "a lease", func(e helperEvent) bool { return e.Event == "started" })
	if first.Lease.Addr.String() != "10.99.0.50/24" {
		t.Fatalf("lease %+v", first.Lease)
	}
	answering.Store(false)
	next(t, events, 10*time.Second, "the lease expiring", func(e helperEvent) bool { return e.Event == "expire" })
	if out := ipIn(t, cl, "addr", "show", "eth0"); strings.Contains(out, "10.99.0.50") {
		t.Fatalf("expired address still on the link: %s", out)
	}
	answering.Store(true)
	again := next(t, events, 15*time.Second, "a new lease after expiry", func(e helperEvent) bool {
		return e.Event == "lease" && e.Lease.Via == "discover"
	})
	if !strings.Contains(ipIn(t, cl, "addr", "show", "eth0"), "10.99.0.50") {
		t.Fatalf("address not back after the new lease %+v", again.Lease)
	}
}

// TestNetworkLeaseExpiryDnsmasq: the expiry of TestNetworkLeaseExpiryAndStaticFallback
// against dnsmasq itself. dnsmasq grants 2 minutes at the least, so this test waits
// that long: a lease from dnsmasq whose server then stops (every renewal at T1 and
// rebind at T2 unanswered) comes off the link at its expiry, not before, and the
// client starts over; the restarted server gives it a lease again.
func TestNetworkLeaseExpiryDnsmasq(t *testing.T) {
	l := newLAN(t, "de", "10.47.0") // only for the namespace helpers and cleanup
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq is missing: build/setup.sh installs dnsmasq-base")
	}
	cl, sv := l.ns("cl"), l.ns("sv")
	addNetns(t, cl, sv)
	ipIn(t, sv, "link", "add", "d0", "type", "veth", "peer", "name", "eth0", "netns", cl)
	ipIn(t, sv, "addr", "add", "10.48.0.1/24", "dev", "d0")
	ipIn(t, sv, "link", "set", "d0", "up")
	leases := filepath.Join(t.TempDir(), "leases")
	stop := dnsmasq(t, sv, "d0", "10.48.0", leases)

	events := startHelper(t, cl, helperConfig{Links: []string{"eth0"}, Timeout: "8s", Grace: "200ms"})
	first := next(t, events, 12*time.Second, "a lease", func(e helperEvent) bool { return e.Event == "started" })
	if !strings.HasPrefix(first.Lease.Addr.String(), "10.48.0.") || first.Lease.Duration != 2*time.Minute {
		t.Fatalf("lease %+v: want a 2 minute lease in 10.48.0.0/24", first.Lease)
	}
	addr := first.Lease.Addr.Addr().String()
	stop()
	exp := next(t, events, time.Until(first.Lease.Expires())+15*time.Second, "the lease expiring", func(e helperEvent) bool {
		return e.Event == "expire"
	})
	if early := time.Until(first.Lease.Expires()); early > time.Second {
		t.Errorf("lease %s dropped %v before its expiry", exp.Lease.Addr, early)
	}
	if out := ipIn(t, cl, "addr", "show", "eth0"); strings.Contains(out, addr+"/") {
		t.Fatalf("expired address still on the link: %s", out)
	}
	dnsmasq(t, sv, "d0", "10.48.0", leases)
	again := next(t, events, 20*time.Second, "a new lease from the restarted server", func(e helperEvent) bool {
		return e.Event == "lease" && e.Lease.Via == "discover"
	})
	if out := ipIn(t, cl, "addr", "show", "eth0"); !strings.Contains(out, again.Lease.Addr.String()) {
		t.Fatalf("address of the new lease %s not on the link: %s", again.Lease.Addr, out)
	}
}
