//go:build integration && linux

package netcfg

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// lan is a test L2 segment: namespace <prefix>-c holds bridge br0 (the "client"
// side, address .9) and each member namespace <prefix>-<name> has eth0 plugged into
// the bridge by a veth pair.
type lan struct {
	t      *testing.T
	prefix string
	subnet string // e.g. "10.77.0"
	hosts  map[string]netns.NsHandle
}

func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %v: %v %s", ns, args, err, out)
	}
	return string(out)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs integration tests as root)")
	}
}

// addNetns creates each named namespace afresh (one left by an earlier run is
// deleted first) with its loopback up, and deletes it in t.Cleanup.
func addNetns(t *testing.T, names ...string) {
	t.Helper()
	for _, ns := range names {
		exec.Command("ip", "netns", "del", ns).Run()
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v %s", ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		ipIn(t, ns, "link", "set", "lo", "up")
	}
}

// newLAN creates the client namespace with the bridge; members are added with add.
func newLAN(t *testing.T, tag, subnet string) *lan {
	needRoot(t)
	l := &lan{t: t, prefix: fmt.Sprintf("x%s-%d", tag, os.Getpid()), subnet: subnet, hosts: map[string]netns.NsHandle{}}
	c := l.prefix + "-c"
	addNetns(t, c)
	ipIn(t, c, "link", "add", "br0", "type", "bridge")
	ipIn(t, c, "addr", "add", subnet+".9/24", "dev", "br0")
	ipIn(t, c, "addr", "add", "fd"+subnet[3:5]+"::9/64", "dev", "br0", "nodad")
	ipIn(t, c, "link", "set", "br0", "up")
	h, err := netns.GetFromName(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	l.hosts["c"] = h
	return l
}

func (l *lan) ns(name string) string { return l.prefix + "-" + name }

// add creates member namespace name with eth0 (address subnet.host/24, MAC
// 02:00:00:00:00:host) on the bridge.
func (l *lan) add(name string, host int) netns.NsHandle {
	t := l.t
	n, c := l.ns(name), l.ns("c")
	addNetns(t, n)
	peer := "v" + name
	ipIn(t, c, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", n)
	ipIn(t, c, "link", "set", peer, "master", "br0", "up")
	ipIn(t, n, "link", "set", "eth0", "address", fmt.Sprintf("02:00:00:00:00:%02x", host))
	ipIn(t, n, "addr", "add", fmt.Sprintf("%s.%d/24", l.subnet, host), "dev", "eth0")
	ipIn(t, n, "link", "set", "eth0", "up")
	h, err := netns.GetFromName(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	l.hosts[name] = h
	return h
}

// neighMAC returns the MAC namespace ns has for ip ("" if none).
func neighMAC(t *testing.T, ns, ip string) string {
	out := ipIn(t, ns, "neigh", "show", ip)
	f := strings.Fields(out)
	for i, w := range f {
		if w == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// nsHandle opens a handle on a namespace the test created.
func nsHandle(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
