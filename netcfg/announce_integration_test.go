//go:build integration && linux

package netcfg

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
)

// arpCapture counts the gratuitous ARPs each VIP gets on the client's bridge.
type arpCapture struct {
	mu     sync.Mutex
	frames map[netip.Addr][]uint16 // ARP ops in arrival order, by sender IP
}

func (c *arpCapture) ops(ip netip.Addr) []uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint16(nil), c.frames[ip]...)
}

// waitFrames waits (bounded) until ip has at least n frames and returns them.
func (c *arpCapture) waitFrames(t *testing.T, ip netip.Addr, n int, d time.Duration) []uint16 {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := c.ops(ip)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d ARP frames within %s, want %d", ip, len(got), d, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestVIPAnnouncementBurstsAndRefresh counts, on a third namespace's bridge, the
// gratuitous ARPs a takeover sends: with the default schedule five announcements
// (0, 0.5, 1, 2 and 5 s after Add), each Burst (3) requests and 3 replies, and
// nothing more without a refresh; with a refresh period, announcements go on
// after the bursts. Counted, not timed: a loaded machine only delays them.
func TestVIPAnnouncementBurstsAndRefresh(t *testing.T) {
	l := newLAN(t, "ann", "10.79.0")
	l.add("a", 1)
	l.add("b", 2)
	vipA := netip.MustParsePrefix("10.79.0.100/24")
	vipB := netip.MustParsePrefix("10.79.0.101/24")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	capt := &arpCapture{frames: map[netip.Addr][]uint16{}}
	var pc *packet.Conn
	if err := inNS(t, l.hosts["c"], func() error {
		ifi, err := net.InterfaceByName("br0")
		if err != nil {
			return err
		}
		pc, err = packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for ctx.Err() == nil {
			pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue
				}
				return
			}
			if n < 14 {
				continue
			}
			p, err := parseARP(buf[14:n])
			if err != nil || p.SenderIP != p.TargetIP { // gratuitous: sender = target
				continue
			}
			capt.mu.Lock()
			capt.frames[p.SenderIP] = append(capt.frames[p.SenderIP], p.Op)
			capt.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); pc.Close(); <-done })

	start := func(name string, opt VIPOptions, p netip.Prefix) {
		t.Helper()
		var v *VIPs
		h := l.hosts[name]
		if err := inNS(t, h, func() error {
			var err error
			if v, err = NewVIPs(opt); err != nil {
				return err
			}
			if err := v.Start(ctx); err != nil {
				return err
			}
			return v.Add(p)
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { inNS(t, h, func() error { return v.Stop(context.Background()) }) })
	}
	// a: the default schedule, no refresh. b: one announcement, then a refresh every 300 ms.
	start("a", VIPOptions{Interface: "eth0", Refresh: -1}, vipA)
	start("b", VIPOptions{Interface: "eth0", Refresh: 300 * time.Millisecond, Bursts: []time.Duration{0}}, vipB)

	const perAnnouncement = 2 * 3 // Burst requests and Burst replies
	got := capt.waitFrames(t, vipA.Addr(), 5*perAnnouncement, 15*time.Second)
	req, rep := 0, 0
	for _, op := range got {
		switch op {
		case arpRequest:
			req++
		case arpReply:
			rep++
		}
	}
	if req != rep || req+rep != len(got) {
		t.Fatalf("%s: %d requests and %d replies of %d frames, want as many of each", vipA.Addr(), req, rep, len(got))
	}
	// Nothing follows the fifth announcement without a refresh.
	time.Sleep(1500 * time.Millisecond)
	if n := len(capt.ops(vipA.Addr())); n != 5*perAnnouncement {
		t.Fatalf("%s: %d ARP frames, want exactly %d (5 announcements of %d, no refresh)", vipA.Addr(), n, 5*perAnnouncement, perAnnouncement)
	}
	// b's single announcement was followed by refreshes.
	if n := len(capt.waitFrames(t, vipB.Addr(), 4*perAnnouncement, 10*time.Second)); n%perAnnouncement != 0 {
		t.Logf("%s: %d frames so far (an announcement in progress)", vipB.Addr(), n)
	}
	t.Logf("%s: %d frames (5 announcements); %s with a 300 ms refresh: %d frames", vipA.Addr(), len(capt.ops(vipA.Addr())), vipB.Addr(), len(capt.ops(vipB.Addr())))
}
