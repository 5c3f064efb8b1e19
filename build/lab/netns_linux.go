package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetNS is the root-mode lab network: a network namespace the lab creates, holding a
// bridge (br0, 10.77.0.1/24) and one tap per node. qemu stays in the host namespace
// (so its user-net port forwards still reach host loopback) and gets each tap as an
// open file descriptor.
type NetNS struct {
	Name string
}

const labBridge = "br0"

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CreateNetNS creates the namespace with its bridge.
func CreateNetNS(name string) (*NetNS, error) {
	if err := ipCmd("netns", "add", name); err != nil {
		return nil, err
	}
	n := &NetNS{Name: name}
	for _, a := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", labBridge, "type", "bridge"},
		{"addr", "add", "10.77.0.1/24", "dev", labBridge},
		{"link", "set", labBridge, "up"},
	} {
		if err := ipCmd(append([]string{"-n", name}, a...)...); err != nil {
			n.Delete()
			return nil, err
		}
	}
	return n, nil
}

// Delete removes the namespace (its bridge and any taps go with it).
func (n *NetNS) Delete() error { return ipCmd("netns", "del", n.Name) }

// inNetNS runs f on an OS thread switched into the named namespace; the thread is
// discarded afterwards.
func inNetNS(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// OpenTap creates tap device name inside the namespace, attached to the bridge, and
// returns its file descriptor for qemu (-netdev tap,fd=N). The tap lives as long as
// some process holds the descriptor.
func (n *NetNS) OpenTap(name string) (*os.File, error) {
	var f *os.File
	err := inNetNS(n.Name, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:unix.IFNAMSIZ-1], name)
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", name, e)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := ipCmd("-n", n.Name, "link", "set", name, "master", labBridge, "up"); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ServeNetNSDHCP runs a DHCP server (insomniacslk server4) on the namespace's bridge
// with the same address plan and options as the multicast segment, until ctx ends.
func ServeNetNSDHCP(ctx context.Context, ns, domain string) error {
	xedge := ""
	if domain != "" {
		xedge = "xedge.domain=" + domain
	}
	plan := &Segment{ServerIP: netip.MustParseAddr("10.77.0.1"), Prefix: netip.MustParsePrefix("10.77.0.0/24"),
		First: netip.MustParseAddr("10.77.0.100"), Domain: domain, Xedge: xedge, Lease: 10 * time.Minute, Fixed: LabAddr,
		leases: map[string]netip.Addr{}, next: netip.MustParseAddr("10.77.0.100")}
	handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		reply, err := plan.dhcp(m)
		if err != nil || reply == nil {
			return
		}
		dst := peer
		if ua, ok := peer.(*net.UDPAddr); !ok || ua.IP.IsUnspecified() || m.ClientIPAddr.IsUnspecified() {
			dst = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
		}
		_, _ = conn.WriteTo(reply.ToBytes(), dst)
	}
	var srv *server4.Server
	if err := inNetNS(ns, func() error {
		var err error
		srv, err = server4.NewServer(labBridge, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
		return err
	}); err != nil {
		return fmt.Errorf("dhcp server in %s: %w", ns, err)
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err := srv.Serve()
	if ctx.Err() != nil {
		return nil
	}
	return err
}
