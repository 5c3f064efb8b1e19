package pxe

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// advertiser puts IPv6 router advertisements on the segment: iPXE configures IPv6
// alongside DHCPv4 and, with no router advertisement, waits ~13 s before it boots.
// The advertisement announces no prefix, no default route (router lifetime 0) and
// no DHCPv6 (M and O flags clear): it only tells iPXE that IPv6 has nothing to
// configure here. Sent at start, every 3 s, and in answer to router solicitations.
type advertiser struct {
	ifi  *net.Interface
	conn *icmp.PacketConn
	pc   *ipv6.PacketConn
	log  *slog.Logger
	once sync.Once
	done chan struct{}
}

var (
	allNodes   = net.ParseIP("ff02::1")
	allRouters = net.ParseIP("ff02::2")
)

func newAdvertiser(ifi *net.Interface, log *slog.Logger) (*advertiser, error) {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("icmpv6 socket: %w", err)
	}
	pc := c.IPv6PacketConn()
	for _, f := range []func() error{
		func() error { return pc.SetMulticastInterface(ifi) },
		func() error { return pc.SetMulticastHopLimit(255) },
		func() error { return pc.SetHopLimit(255) },
		func() error { return pc.JoinGroup(ifi, &net.IPAddr{IP: allRouters}) },
		func() error {
			var f ipv6.ICMPFilter
			f.SetAll(true)
			f.Accept(ipv6.ICMPTypeRouterSolicitation)
			return pc.SetICMPFilter(&f)
		},
	} {
		if err := f(); err != nil {
			c.Close()
			return nil, fmt.Errorf("icmpv6 on %s: %w", ifi.Name, err)
		}
	}
	return &advertiser{ifi: ifi, conn: c, pc: pc, log: log, done: make(chan struct{})}, nil
}

// message is the router advertisement (RFC 4861 4.2) with the source link-layer
// address option; the kernel fills in the ICMPv6 checksum.
func (a *advertiser) message() []byte {
	b := []byte{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if len(a.ifi.HardwareAddr) == 6 {
		b = append(b, 1, 1)
		b = append(b, a.ifi.HardwareAddr...)
	}
	return b
}

func (a *advertiser) send() error {
	_, err := a.pc.WriteTo(a.message(), &ipv6.ControlMessage{IfIndex: a.ifi.Index, HopLimit: 255},
		&net.IPAddr{IP: allNodes, Zone: a.ifi.Name})
	return err
}

func (a *advertiser) run(ctx context.Context) {
	solicit := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := a.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if n > 0 && buf[0] == byte(ipv6.ICMPTypeRouterSolicitation) {
				select {
				case solicit <- struct{}{}:
				default:
				}
			}
		}
	}()
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	warned := false
	for {
		if err := a.send(); err != nil && !warned {
			// Typically: no link-local address yet (no port on the bridge).
			a.log.Debug("pxe: router advertisement", "err", err)
			warned = true
		} else if err == nil {
			warned = false
		}
		select {
		case <-ctx.Done():
			return
		case <-a.done:
			return
		case <-t.C:
		case <-solicit:
		}
	}
}

func (a *advertiser) close() {
	a.once.Do(func() {
		close(a.done)
		a.conn.Close()
	})
}
