package pxe

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Config configures a Server.
type Config struct {
	// Interface is the link DHCP and router advertisements are served on.
	Interface string
	// Mode is ModeFull (hand out addresses from Pool) or ModeProxy (boot information
	// only, beside the site's DHCP server).
	Mode string
	// ServerIP is this server's address on Interface (default: its first IPv4).
	ServerIP netip.Addr
	// Pool hands out addresses in ModeFull.
	Pool *Pool
	// Router, DNS and Domain (option 15) are optional ModeFull options; DHCPText is
	// sent as option 224 (xedge.* parameters as text).
	Router   netip.Addr
	DNS      []netip.Addr
	Domain   string
	DHCPText string
	// Hostname names an address in ModeFull (option 12); nil or "" sends none.
	Hostname func(netip.Addr, net.HardwareAddr) string
	// Boot is what boxes boot. Without a kernel and initramfs the server answers
	// DHCP (ModeFull) and serves parameters, but offers no network boot.
	Boot Boot
	// HTTPPort is the boot server's HTTP port (default 80).
	HTTPPort int
	// TFTPDir holds the iPXE binaries legacy PXE firmware fetches by TFTP
	// (undionly.kpxe, ipxe.efi; Debian's `ipxe` package puts them in /usr/lib/ipxe).
	// Empty: no TFTP, legacy firmware gets no boot offer.
	TFTPDir string
	// NoRA turns off the router advertisements (then iPXE waits ~13 s for IPv6
	// autoconfiguration on a segment without a router).
	NoRA bool
	Log  *slog.Logger
}

func (c *Config) check() error {
	if c.Interface == "" {
		return errors.New("pxe: no interface")
	}
	switch c.Mode {
	case ModeFull:
		if c.Pool == nil {
			return errors.New("pxe: full DHCP needs an address pool")
		}
		if c.Pool.Lease == 0 {
			c.Pool.Lease = time.Hour
		}
	case ModeProxy:
	default:
		return fmt.Errorf("pxe: mode %q: want %s or %s", c.Mode, ModeFull, ModeProxy)
	}
	if (c.Boot.Kernel == "") != (c.Boot.Initrd == "") {
		return errors.New("pxe: give both a kernel and an initramfs (or neither, for DHCP and parameters only)")
	}
	if c.HTTPPort == 0 {
		c.HTTPPort = 80
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// URL is the boot server's base URL for a server address and port.
func URL(ip netip.Addr, port int) string {
	if port == 80 {
		return fmt.Sprintf("http://%s/", ip)
	}
	return fmt.Sprintf("http://%s/", netip.AddrPortFrom(ip, uint16(port)))
}
