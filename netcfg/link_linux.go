package netcfg

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
)

// LinkUp sets the named link administratively up.
func LinkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("link %s up: %w", name, err)
	}
	return nil
}

// EthernetLinks lists the names of physical ethernet-like links (device links with a
// MAC address, not loopback, bridges, vlans or veths), sorted by name.
func EthernetLinks() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "device" || a.Flags&net.FlagLoopback != 0 || len(a.HardwareAddr) != 6 {
			continue
		}
		out = append(out, a.Name)
	}
	sort.Strings(out)
	return out, nil
}

// Configure applies a lease: address on its interface and, when defaultRoute is set
// and the lease names a router, the default route through it.
func Configure(l Lease, defaultRoute bool) error {
	link, err := netlink.LinkByName(l.Interface)
	if err != nil {
		return fmt.Errorf("link %s: %w", l.Interface, err)
	}
	addr := &netlink.Addr{IPNet: prefixToIPNet(l.Addr)}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", l.Addr, l.Interface, err)
	}
	if l.MTU > 0 && link.Attrs().MTU != l.MTU {
		if err := netlink.LinkSetMTU(link, l.MTU); err != nil {
			return fmt.Errorf("mtu %d on %s: %w", l.MTU, l.Interface, err)
		}
	}
	if defaultRoute && l.Router.IsValid() {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.IP(l.Router.AsSlice())}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s: %w", l.Router, err)
		}
	}
	for _, rt := range l.Routes {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixToIPNet(rt.Dst), Gw: net.IP(rt.Gw.AsSlice())}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via %s: %w", rt.Dst, rt.Gw, err)
		}
	}
	return nil
}

// Unconfigure takes a lease's address off its interface (its routes go with it).
func Unconfigure(l Lease) error {
	if !l.Addr.IsValid() {
		return nil
	}
	return RemoveAddrs(l.Interface, []netip.Prefix{l.Addr})
}

// LoopbackUp brings lo up (the kernel gives it 127.0.0.1 once it is up).
func LoopbackUp() error { return LinkUp("lo") }

// SetHostname sets the kernel hostname and /etc/hostname.
func SetHostname(name string) error {
	if err := os.WriteFile("/proc/sys/kernel/hostname", []byte(name), 0); err != nil {
		return fmt.Errorf("set hostname %q: %w", name, err)
	}
	_ = os.WriteFile("/etc/hostname", []byte(name+"\n"), 0o644)
	return nil
}

// WriteResolvConf writes /etc/resolv.conf from a lease's DNS servers and domain.
func WriteResolvConf(path string, l Lease) error {
	var b strings.Builder
	if l.Domain != "" {
		fmt.Fprintf(&b, "search %s\n", l.Domain)
	}
	for _, d := range l.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
