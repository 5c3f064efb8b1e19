package netcfg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// VIPs adds and removes virtual addresses on one interface, announces them and
// watches the wire for another host announcing them. It executes: who holds a VIP
// is decided elsewhere.
type VIPs struct {
	opt VIPOptions
	ifi *net.Interface
	log *slog.Logger
	nl  *netlink.Handle // bound to the namespace NewVIPs ran in

	mu       sync.Mutex
	held     map[netip.Addr]*heldVIP
	arp      *packet.Conn
	icmp     *ipv6.PacketConn
	icmpConn net.PacketConn
	raw      map[bool]int // IPPROTO_RAW sockets for tickles, by IPv4-ness (made in Start)
	advert   *packet.Conn // VIP adverts (nil: off)
	adv      AdvertStats
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ctx      context.Context
}

type heldVIP struct {
	prefix   netip.Prefix
	since    time.Time
	cancel   context.CancelFunc // the post-takeover bursts
	conflict time.Time          // last conflict reported
}

// HeldVIP describes one VIP this interface holds.
type HeldVIP struct {
	Prefix netip.Prefix `json:"prefix"`
	Since  time.Time    `json:"since"`
}

// NewVIPs prepares the mechanics for opt.Interface (which must exist).
func NewVIPs(opt VIPOptions) (*VIPs, error) {
	if opt.Burst <= 0 {
		opt.Burst = 3
	}
	if opt.Bursts == nil {
		opt.Bursts = []time.Duration{0, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second}
	}
	if opt.Refresh == 0 {
		opt.Refresh = 10 * time.Second
	}
	if opt.TickleRate <= 0 {
		opt.TickleRate = 500
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Lifetime == 0 {
		opt.Lifetime = 3 * time.Second
	}
	if opt.Lifetime > 0 && opt.Lifetime < time.Second {
		opt.Lifetime = time.Second // the kernel counts lifetimes in seconds
	}
	ifi, err := net.InterfaceByName(opt.Interface)
	if err != nil {
		return nil, fmt.Errorf("vip interface %s: %w", opt.Interface, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("vip interface %s has no Ethernet address", opt.Interface)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("vip netlink: %w", err)
	}
	return &VIPs{opt: opt, ifi: ifi, nl: h, log: opt.Log.With("component", "netcfg-vip", "if", opt.Interface),
		held: map[netip.Addr]*heldVIP{}}, nil
}

// addAddr puts p on the interface with the configured lifetime (or refreshes it).
func (v *VIPs) addAddr(p netip.Prefix) error {
	link, err := v.nl.LinkByIndex(v.ifi.Index)
	if err != nil {
		return fmt.Errorf("vip link %s: %w", v.ifi.Name, err)
	}
	a := &netlink.Addr{IPNet: prefixToIPNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if v.opt.Lifetime > 0 {
		secs := int((v.opt.Lifetime + time.Second - 1) / time.Second)
		a.ValidLft, a.PreferedLft = secs, secs
	}
	if err := v.nl.AddrReplace(link, a); err != nil {
		return fmt.Errorf("add vip %s on %s: %w", p, v.ifi.Name, err)
	}
	return nil
}

// localRouteWait bounds waitLocal (an interface that is down gets its local
// routes only once it is up: Add waits this long, warns and goes on).
const localRouteWait = time.Second

// waitLocal returns once the kernel routes ip to this host. For a new IPv6 address
// (even with IFA_F_NODAD) the local route is inserted by addrconf's workqueue
// after RTM_NEWADDR returns, not by the request: until then the address is usable
// as a source (an unsolicited NA, a tickle go out from it) but packets to it are
// not delivered (forwarding off: dropped, Ip6InAddrErrors). A client's NA answering
// the neighbour solicitation the first tickle triggers was lost that way, so the
// tickles waited for the next solicitation, 1 s later, instead of resetting the
// client at once.
func (v *VIPs) waitLocal(ip netip.Addr) error {
	deadline := time.Now().Add(localRouteWait)
	for {
		rs, err := v.nl.RouteGet(net.IP(ip.AsSlice()))
		if err == nil && len(rs) > 0 && rs[0].Type == unix.RTN_LOCAL {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("no local route")
			}
			return fmt.Errorf("vip %s on %s not routed locally after %s: %w", ip, v.ifi.Name, localRouteWait, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// lifetimeLoop refreshes the lifetime of every held address.
func (v *VIPs) lifetimeLoop(ctx context.Context) {
	defer v.wg.Done()
	if v.opt.Lifetime < 0 {
		return
	}
	t := time.NewTicker(v.opt.Lifetime / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, h := range v.Held() {
				if err := v.addAddr(h.Prefix); err != nil {
					v.log.Warn("vip lifetime refresh failed", "vip", h.Prefix, "err", err)
				}
			}
		}
	}
}

// Start opens the ARP and ICMPv6 sockets, starts the conflict watchers and the
// refresh loop; they run until Stop or ctx ends.
func (v *VIPs) Start(ctx context.Context) error {
	arp, err := packet.Listen(v.ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return fmt.Errorf("arp socket on %s: %w", v.ifi.Name, err)
	}
	raw := map[bool]int{}
	for _, v4 := range []bool{true, false} {
		fam := unix.AF_INET6
		if v4 {
			fam = unix.AF_INET
		}
		if fd, err := unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err == nil {
			raw[v4] = fd
		} else if v4 {
			arp.Close()
			return fmt.Errorf("raw socket for tickles: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	v.mu.Lock()
	v.arp, v.cancel, v.ctx, v.raw = arp, cancel, ctx, raw
	v.mu.Unlock()
	// IPv6 is optional: a kernel without it still serves IPv4 VIPs.
	if c, err := net.ListenPacket("ip6:ipv6-icmp", "::"); err != nil {
		v.log.Info("no ICMPv6 socket: IPv6 VIPs cannot be announced", "err", err)
	} else {
		p := ipv6.NewPacketConn(c)
		_ = p.SetMulticastHopLimit(255)
		_ = p.SetHopLimit(255)
		_ = p.SetMulticastInterface(v.ifi)
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
		_ = p.SetICMPFilter(&f)
		_ = p.SetControlMessage(ipv6.FlagInterface, true)
		v.mu.Lock()
		v.icmp, v.icmpConn = p, c
		v.mu.Unlock()
		v.wg.Add(1)
		go v.watchNA(ctx)
	}
	if v.opt.AdvertNode != "" && v.opt.AdvertInterval > 0 {
		c, err := packet.Listen(v.ifi, packet.Raw, etherTypeAdvert, nil)
		if err != nil {
			cancel()
			arp.Close()
			return fmt.Errorf("advert socket on %s: %w", v.ifi.Name, err)
		}
		v.mu.Lock()
		v.advert = c
		v.mu.Unlock()
		v.wg.Add(2)
		go v.sendAdverts(ctx, c)
		go v.watchAdverts(ctx, c)
	}
	v.wg.Add(3)
	go v.watchARP(ctx)
	go v.refreshLoop(ctx)
	go v.lifetimeLoop(ctx)
	return nil
}

// Stop ends the watchers and removes every VIP this interface holds (a node that
// stops serving withdraws its addresses).
func (v *VIPs) Stop(ctx context.Context) error {
	var errs []error
	for _, h := range v.Held() {
		if err := v.Remove(h.Prefix); err != nil {
			errs = append(errs, err)
		}
	}
	if err := v.halt(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// halt ends the watchers and the refresh loops and closes the sockets, leaving the
// addresses as they are (what a dying process leaves behind).
func (v *VIPs) halt(ctx context.Context) error {
	v.mu.Lock()
	cancel, arp, icmp, adv := v.cancel, v.arp, v.icmpConn, v.advert
	v.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if arp != nil {
		arp.Close()
	}
	if adv != nil {
		adv.Close()
	}
	if icmp != nil {
		icmp.Close()
	}
	done := make(chan struct{})
	go func() { v.wg.Wait(); close(done) }()
	defer func() {
		v.mu.Lock()
		for _, fd := range v.raw {
			unix.Close(fd)
		}
		v.raw = nil
		v.mu.Unlock()
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	v.nl.Close()
	return err
}

// Add puts p on the interface (IPv6 without duplicate address detection, and Add
// returns only once the kernel delivers packets to it, at most 1 s: waitLocal) and
// announces it: a burst now and the follow-up bursts. Adding a VIP held already
// only announces it again.
func (v *VIPs) Add(p netip.Prefix) error {
	if err := v.addAddr(p); err != nil {
		return err
	}
	if p.Addr().Is6() {
		// Before the announcement and the caller's tickles: their answers are
		// addressed to the VIP.
		if err := v.waitLocal(p.Addr()); err != nil {
			v.log.Warn("vip not yet usable as a destination", "vip", p, "err", err)
		}
	}
	v.mu.Lock()
	h := v.held[p.Addr()]
	if h == nil {
		h = &heldVIP{prefix: p, since: time.Now()}
		v.held[p.Addr()] = h
	}
	if h.cancel != nil {
		h.cancel()
	}
	ctx := v.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	bctx, cancel := context.WithCancel(ctx)
	h.cancel = cancel
	v.mu.Unlock()
	v.log.Info("vip added", "vip", p)
	start := time.Now()
	bursts := v.opt.Bursts
	// The first burst goes out before Add returns: a caller that tickles the
	// previous holder's clients right after Add must not have its tickle ACKs
	// answered towards the old holder's MAC (the clients' neighbour entry still
	// names it until the gratuitous ARP arrives, and a client answers an
	// out-of-window ACK at most once per 500 ms, tcp_invalid_ratelimit).
	if len(bursts) > 0 && bursts[0] <= 0 {
		if err := v.Announce(p.Addr()); err != nil {
			v.log.Warn("vip announce failed", "vip", p, "err", err)
		}
		bursts = bursts[1:]
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		for _, d := range bursts {
			if !sleep(bctx, time.Until(start.Add(d))) {
				return
			}
			if err := v.Announce(p.Addr()); err != nil {
				v.log.Warn("vip announce failed", "vip", p, "err", err)
			}
		}
	}()
	return nil
}

// Remove takes p off the interface and stops announcing it. Removing an address that
// is not there is not an error.
func (v *VIPs) Remove(p netip.Prefix) error {
	v.mu.Lock()
	if h := v.held[p.Addr()]; h != nil {
		if h.cancel != nil {
			h.cancel()
		}
		delete(v.held, p.Addr())
	}
	v.mu.Unlock()
	if err := removeAddrs(v.nl, v.ifi.Name, []netip.Prefix{p}); err != nil {
		return err
	}
	v.log.Info("vip removed", "vip", p)
	return nil
}

// Held lists the VIPs this interface holds.
func (v *VIPs) Held() []HeldVIP {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]HeldVIP, 0, len(v.held))
	for _, h := range v.held {
		out = append(out, HeldVIP{h.prefix, h.since})
	}
	slices.SortFunc(out, func(a, b HeldVIP) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return out
}

// Announce sends one burst for ip: gratuitous ARP requests and replies (IPv4) or
// unsolicited neighbour advertisements to all nodes (IPv6).
func (v *VIPs) Announce(ip netip.Addr) error {
	v.mu.Lock()
	arp, icmp := v.arp, v.icmp
	v.mu.Unlock()
	mac := v.ifi.HardwareAddr
	for i := 0; i < v.opt.Burst; i++ {
		if ip.Is4() {
			if arp == nil {
				return errors.New("vip mechanics not started")
			}
			dst := &packet.Addr{HardwareAddr: broadcastMAC}
			for _, op := range []uint16{arpRequest, arpReply} {
				if _, err := arp.WriteTo(garpFrame(mac, ip, op), dst); err != nil {
					return fmt.Errorf("gratuitous arp for %s: %w", ip, err)
				}
			}
			continue
		}
		if icmp == nil {
			return errors.New("no ICMPv6 socket for unsolicited NA")
		}
		cm := &ipv6.ControlMessage{HopLimit: 255, IfIndex: v.ifi.Index, Src: net.IP(ip.AsSlice())}
		// A numeric zone: the name would be resolved in the calling thread's namespace.
		dst := &net.IPAddr{IP: net.IPv6linklocalallnodes, Zone: strconv.Itoa(v.ifi.Index)}
		if _, err := icmp.WriteTo(unsolicitedNA(mac, ip), cm, dst); err != nil {
			return fmt.Errorf("unsolicited na for %s: %w", ip, err)
		}
	}
	return nil
}

func (v *VIPs) refreshLoop(ctx context.Context) {
	defer v.wg.Done()
	if v.opt.Refresh < 0 {
		return
	}
	t := time.NewTicker(v.opt.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, h := range v.Held() {
				if err := v.Announce(h.Prefix.Addr()); err != nil {
					v.log.Warn("vip refresh failed", "vip", h.Prefix, "err", err)
				}
			}
		}
	}
}

// conflict reports that from announced ip, if this interface holds ip.
func (v *VIPs) conflict(ip netip.Addr, from net.HardwareAddr) {
	if slices.Equal(from, v.ifi.HardwareAddr) || len(from) == 0 {
		return
	}
	v.mu.Lock()
	h := v.held[ip]
	report := h != nil && time.Since(h.conflict) > 500*time.Millisecond
	if report {
		h.conflict = time.Now()
	}
	v.mu.Unlock()
	if !report {
		return
	}
	v.log.Warn("vip announced by another host", "vip", ip, "mac", from)
	if v.opt.OnConflict != nil {
		v.opt.OnConflict(ip, from)
	}
}

func (v *VIPs) watchARP(ctx context.Context) {
	defer v.wg.Done()
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, _, err := v.arp.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// ENETDOWN while the link is down: keep watching once it is back.
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		if n < 14 {
			continue
		}
		p, err := parseARP(buf[14:n])
		if err != nil {
			continue
		}
		v.conflict(p.SenderIP, p.SenderMAC)
	}
}

func (v *VIPs) watchNA(ctx context.Context) {
	defer v.wg.Done()
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, cm, _, err := v.icmp.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		if cm != nil && cm.IfIndex != 0 && cm.IfIndex != v.ifi.Index {
			continue
		}
		if target, mac, ok := parseNA(buf[:n]); ok {
			v.conflict(target, mac)
		}
	}
}

// tickleRounds are the times after a takeover at which tickles go out: the first
// round's answers may still go to the old holder's MAC while a neighbour ignores the
// first gratuitous ARP (its 1 s locktime); later rounds follow the later bursts.
var tickleRounds = []time.Duration{0, 600 * time.Millisecond, 1200 * time.Millisecond, 2500 * time.Millisecond}

// Tickle sends, paced at TickleRate per second, a tickle ACK for every connection
// (the VIP side first), in four rounds over 2.5 s: each client answers with an
// ACK that reaches this node, which resets it, so clients of a lost holder
// reconnect at once instead of waiting for their own timeouts. It returns how many
// the first round sent.
func (v *VIPs) Tickle(ctx context.Context, conns []Conn) (int, error) {
	first, err := 0, error(nil)
	start := time.Now()
	for i, d := range tickleRounds {
		if !sleep(ctx, time.Until(start.Add(d))) {
			break
		}
		v.mu.Lock()
		fds := maps.Clone(v.raw)
		v.mu.Unlock()
		n, e := sendTickles(ctx, fds, conns, v.opt.TickleRate)
		if i == 0 {
			first, err = n, e
		}
	}
	return first, err
}

func sendTickles(ctx context.Context, fds map[bool]int, conns []Conn, rate int) (int, error) {
	if len(conns) == 0 {
		return 0, nil
	}
	const tick = 10 * time.Millisecond
	perTick := max(1, rate/100)
	sent := 0
	var errs []error
	for i, c := range conns {
		if i > 0 && i%perTick == 0 && !sleep(ctx, tick) {
			return sent, ctx.Err()
		}
		v4 := c.Local.Addr().Is4()
		fd, ok := fds[v4]
		if !ok {
			if len(errs) < 3 {
				errs = append(errs, fmt.Errorf("tickle %s -> %s: no raw socket (mechanics not started, or no IPv6)", c.Local, c.Remote))
			}
			continue
		}
		var sa unix.Sockaddr
		if v4 {
			sa = &unix.SockaddrInet4{Addr: c.Remote.Addr().As4()}
		} else {
			sa = &unix.SockaddrInet6{Addr: c.Remote.Addr().As16()}
		}
		if err := unix.Sendto(fd, tickle(c, 0, 0, false), 0, sa); err != nil {
			if len(errs) < 3 {
				errs = append(errs, fmt.Errorf("tickle %s -> %s: %w", c.Local, c.Remote, err))
			}
			continue
		}
		sent++
	}
	return sent, errors.Join(errs...)
}

// RemoveAddrs removes the given addresses from ifname where present (e.g. VIPs left
// behind by a crashed xmppd: the kernel would keep answering ARP for them).
func RemoveAddrs(ifname string, ps []netip.Prefix) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	return removeAddrs(h, ifname, ps)
}

func removeAddrs(h *netlink.Handle, ifname string, ps []netip.Prefix) error {
	link, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("link %s: %w", ifname, err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", ifname, err)
	}
	var errs []error
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		for _, p := range ps {
			if p.Addr() == ip {
				if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
					errs = append(errs, fmt.Errorf("remove %s from %s: %w", p, ifname, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// TCPConnections lists the established TCP connections whose local address is one of
// locals and local port one of ports (empty: any), read from the kernel's socket
// table (sock_diag).
func TCPConnections(locals []netip.Addr, ports []uint16) ([]Conn, error) {
	var out []Conn
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := netlink.SocketDiagTCP(fam)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			if fam == unix.AF_INET6 {
				continue
			}
			return nil, fmt.Errorf("tcp sockets: %w", err)
		}
		for _, s := range socks {
			if s.State != 1 { // TCP_ESTABLISHED
				continue
			}
			l, ok1 := netip.AddrFromSlice(s.ID.Source)
			r, ok2 := netip.AddrFromSlice(s.ID.Destination)
			if !ok1 || !ok2 {
				continue
			}
			l, r = l.Unmap(), r.Unmap()
			if !slices.Contains(locals, l) || (len(ports) > 0 && !slices.Contains(ports, s.ID.SourcePort)) {
				continue
			}
			out = append(out, Conn{Local: netip.AddrPortFrom(l, s.ID.SourcePort), Remote: netip.AddrPortFrom(r, s.ID.DestinationPort)})
		}
	}
	return out, nil
}
