//go:build !linux

package netcfg

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"
)

// errNotLinux is returned by the VIP mechanics on systems other than Linux.
var errNotLinux = errors.New("netcfg: VIP mechanics need Linux")

// VIPs is the VIP mechanics (Linux only).
type VIPs struct{}

// HeldVIP describes one VIP this interface holds.
type HeldVIP struct {
	Prefix netip.Prefix `json:"prefix"`
	Since  time.Time    `json:"since"`
}

func NewVIPs(VIPOptions) (*VIPs, error)                     { return nil, errNotLinux }
func (v *VIPs) Start(context.Context) error                 { return errNotLinux }
func (v *VIPs) Stop(context.Context) error                  { return nil }
func (v *VIPs) Add(netip.Prefix) error                      { return errNotLinux }
func (v *VIPs) Remove(netip.Prefix) error                   { return errNotLinux }
func (v *VIPs) Held() []HeldVIP                             { return nil }
func (v *VIPs) Adverts() AdvertStats                        { return AdvertStats{} }
func (v *VIPs) Announce(netip.Addr) error                   { return errNotLinux }
func (v *VIPs) Tickle(context.Context, []Conn) (int, error) { return 0, errNotLinux }
func RemoveAddrs(string, []netip.Prefix) error              { return errNotLinux }
func TCPConnections([]netip.Addr, []uint16) ([]Conn, error) { return nil, errNotLinux }

// Firewall is the firewall (Linux only).
type Firewall struct{}

func NewFirewall(*slog.Logger) (*Firewall, error)    { return nil, errNotLinux }
func (f *Firewall) Apply(FirewallSpec) (bool, error) { return false, errNotLinux }
func (f *Firewall) Remove() error                    { return errNotLinux }
