//go:build integration

package pxe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"pack.ag/tftp"
)

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// segment makes a network namespace holding the server's end of a veth pair
// (10.88.0.1/24); the client's end stays in the test's namespace (10.88.0.50/24 once
// the test adds it) so the Go clients (DHCP, HTTP, TFTP, ICMPv6) run as usual.
func segment(t *testing.T) (ns, srvIf, cliIf string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace, veth); CI runs the integration tier as root")
	}
	id := os.Getpid() % 100000
	ns, srvIf, cliIf = fmt.Sprintf("xpxe-%d", id), fmt.Sprintf("xps%d", id), fmt.Sprintf("xpc%d", id)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "link", "add", cliIf, "type", "veth", "peer", "name", srvIf)
	t.Cleanup(func() { exec.Command("ip", "link", "del", cliIf).Run() })
	run(t, "ip", "link", "set", srvIf, "netns", ns)
	run(t, "ip", "-n", ns, "addr", "add", "10.88.0.1/24", "dev", srvIf)
	run(t, "ip", "-n", ns, "link", "set", srvIf, "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(t, "ip", "link", "set", cliIf, "up")
	return ns, srvIf, cliIf
}

// startIn starts s on a thread switched into ns: every socket Start opens lives there.
func startIn(t *testing.T, ns string, s *Server) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- s.Start(context.Background())
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
}

func bootFiles(t *testing.T) (kernel, initrd, tftpDir string) {
	dir := t.TempDir()
	kernel, initrd, tftpDir = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs.cpio.xz"), filepath.Join(dir, "tftp")
	os.WriteFile(kernel, []byte(strings.Repeat("K", 100000)), 0o644)
	os.WriteFile(initrd, []byte("INITRD"), 0o644)
	os.Mkdir(tftpDir, 0o755)
	os.WriteFile(filepath.Join(tftpDir, "undionly.kpxe"), []byte(strings.Repeat("U", 70000)), 0o644)
	return
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestServerFull runs the full server over a real veth: an iPXE client's DHCP gets
// an address, the script URL and option 175/176; a router advertisement arrives; the
// script, kernel and parameters come over HTTP; legacy firmware gets iPXE by TFTP.
func TestServerFull(t *testing.T) {
	ns, srvIf, cliIf := segment(t)
	kernel, initrd, tftpDir := bootFiles(t)
	// Listen for router advertisements before the server starts.
	ra, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	ifi, _ := net.InterfaceByName(cliIf)
	ra.IPv6PacketConn().JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::1")})

	s, err := New(Config{Interface: srvIf, Mode: ModeFull, ServerIP: netip.MustParseAddr("10.88.0.1"),
		Pool:   &Pool{Prefix: netip.MustParsePrefix("10.88.0.0/24"), First: netip.MustParseAddr("10.88.0.100"), Last: netip.MustParseAddr("10.88.0.110")},
		Domain: "lab.example", TFTPDir: tftpDir, Log: quietLog(),
		Boot: Boot{Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0", Params: map[string]string{"key": "0123456789abcdef-key"}, AutoSeeds: true}})
	if err != nil {
		t.Fatal(err)
	}
	startIn(t, ns, s)

	c, err := nclient4.New(cliIf, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lease, err := c.Request(ctx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")))
	if err != nil {
		t.Fatal(err)
	}
	ack := lease.ACK
	if ack.YourIPAddr.String() != "10.88.0.100" || ack.BootFileNameOption() != "http://10.88.0.1/boot.ipxe" ||
		string(ack.GetOneOption(dhcpv4.GenericOptionCode(175))) != string([]byte{176, 1, 1}) {
		t.Fatalf("ack: %s", ack.Summary())
	}

	// Router advertisement on the segment (iPXE's IPv6 autoconfiguration ends on it).
	ra.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := ra.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no router advertisement within 10 s: %v", err)
		}
		if n >= 16 && buf[0] == byte(ipv6.ICMPTypeRouterAdvertisement) {
			if lifetime := int(buf[6])<<8 | int(buf[7]); lifetime != 0 || buf[5]&0xc0 != 0 {
				t.Fatalf("RA must announce no default router and no DHCPv6: lifetime %d flags %#x", lifetime, buf[5])
			}
			break
		}
	}

	run(t, "ip", "addr", "add", "10.88.0.100/24", "dev", cliIf)
	get := func(path string) string {
		resp, err := http.Get("http://10.88.0.1/" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return string(b)
	}
	if s := get("boot.ipxe"); !strings.Contains(s, "kernel http://10.88.0.1/vmlinuz initrd=initramfs.cpio.xz console=ttyS0 xedge.boot=http://10.88.0.1/") {
		t.Fatalf("script:\n%s", s)
	}
	if k := get("vmlinuz"); len(k) != 100000 {
		t.Fatalf("kernel: %d bytes", len(k))
	}
	if p := get("params?mac=" + ifi.HardwareAddr.String()); !strings.Contains(p, "xedge.key=0123456789abcdef-key") || strings.Contains(p, "seeds") {
		t.Fatalf("params:\n%s", p)
	}
	if b := get("boxes"); !strings.Contains(b, ifi.HardwareAddr.String()) || !strings.Contains(b, `"params"`) {
		t.Fatalf("boxes: %s", b)
	}

	// Legacy BIOS PXE firmware: the next DHCP names undionly.kpxe, fetched by TFTP.
	offer, err := c.DiscoverOffer(ctx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
	if err != nil {
		t.Fatal(err)
	}
	if offer.BootFileNameOption() != "undionly.kpxe" || offer.ServerIPAddr.String() != "10.88.0.1" {
		t.Fatalf("legacy offer: %s", offer.Summary())
	}
	tc, err := tftp.NewClient(tftp.ClientTimeout(2))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tc.Get("10.88.0.1:69/undionly.kpxe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp)
	if err != nil || len(b) != 70000 {
		t.Fatalf("tftp: %d bytes, %v", len(b), err)
	}
	if _, err := tc.Get("10.88.0.1:69/../etc/passwd"); err == nil {
		t.Fatal("tftp served a path outside its directory")
	}
}

// TestServerProxy runs ProxyDHCP: it ignores plain DHCP clients, offers PXE firmware
// boot information without an address, and answers the boot request on port 4011.
func TestServerProxy(t *testing.T) {
	ns, srvIf, cliIf := segment(t)
	kernel, initrd, _ := bootFiles(t)
	s, err := New(Config{Interface: srvIf, Mode: ModeProxy, ServerIP: netip.MustParseAddr("10.88.0.1"), Log: quietLog(), NoRA: true,
		Boot: Boot{Kernel: kernel, Initrd: initrd}})
	if err != nil {
		t.Fatal(err)
	}
	startIn(t, ns, s)
	c, err := nclient4.New(cliIf, nclient4.WithTimeout(time.Second), nclient4.WithRetry(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if o, err := c.DiscoverOffer(ctx); err == nil {
		t.Fatalf("proxy answered a plain DHCP client: %s", o.Summary())
	}
	ipxe := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))}
	o, err := c.DiscoverOffer(ctx, ipxe...)
	if err != nil {
		t.Fatal(err)
	}
	if !o.YourIPAddr.IsUnspecified() || o.ClassIdentifier() != "PXEClient" || o.BootFileNameOption() != "http://10.88.0.1/boot.ipxe" {
		t.Fatalf("proxy offer: %s", o.Summary())
	}
	// The boot request on 4011, from an address the site's server gave.
	run(t, "ip", "addr", "add", "10.88.0.77/24", "dev", cliIf)
	conn, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP("10.88.0.1"), Port: 4011})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ifi, _ := net.InterfaceByName(cliIf)
	req, _ := dhcpv4.New(append(ipxe, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(ifi.HardwareAddr),
		dhcpv4.WithClientIP(net.ParseIP("10.88.0.77")))...)
	conn.Write(req.ToBytes())
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no answer on port 4011: %v", err)
	}
	ack, err := dhcpv4.FromBytes(buf[:n])
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileNameOption() != "http://10.88.0.1/boot.ipxe" {
		t.Fatalf("4011 ack: %v %v", ack, err)
	}
}
