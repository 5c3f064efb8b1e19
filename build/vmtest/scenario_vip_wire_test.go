//go:build vmtest

package vmtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/packet"
)

// wireEvent is one frame of interest on the lab's bridge, with the host's time.
type wireEvent struct {
	at   time.Time
	kind string // "garp", "tickle", "ack-out", "rst-in", "syn-out", "data-out"
	mac  string // the frame's source MAC
}

// vipWire records, on the lab's bridge (the host side, where alice's client
// runs), what a VIP failover puts on the wire: the gratuitous ARPs for the VIP
// (takeover), the tickle ACKs from the VIP to the client (sequence and
// acknowledgement 0), the client's segments to the VIP (retransmissions,
// answers to tickles, new connections) and the resets it gets. Host clock
// only: the guests' clocks start from an RTC with one-second resolution.
type vipWire struct {
	vip  netip.Addr
	port uint16 // the VIP's service port

	mu     sync.Mutex
	events []wireEvent
	conn   *packet.Conn
	done   chan struct{}
}

// startVIPWire listens on the bridge br0 of namespace ns until stop.
func startVIPWire(ns string, vip netip.Addr, port uint16) (*vipWire, error) {
	w := &vipWire{vip: vip, port: port, done: make(chan struct{})}
	err := inNetNS(ns, func() error {
		ifi, err := net.InterfaceByName("br0")
		if err != nil {
			return err
		}
		w.conn, err = packet.Listen(ifi, packet.Raw, 0x0003, nil) // ETH_P_ALL
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("capture on the lab bridge: %w", err)
	}
	go w.read()
	return w, nil
}

func (w *vipWire) stop() {
	w.conn.Close()
	<-w.done
}

func (w *vipWire) read() {
	defer close(w.done)
	buf := make([]byte, 2048)
	for {
		_ = w.conn.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := w.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return
		}
		if kind := w.classify(buf[:n]); kind != "" {
			w.mu.Lock()
			if len(w.events) < 100000 {
				w.events = append(w.events, wireEvent{at: time.Now(), kind: kind, mac: net.HardwareAddr(buf[6:12]).String()})
			}
			w.mu.Unlock()
		}
	}
}

// classify names a frame of interest ("" for the rest).
func (w *vipWire) classify(f []byte) string {
	if len(f) < 14 {
		return ""
	}
	et := binary.BigEndian.Uint16(f[12:14])
	p := f[14:]
	switch et {
	case 0x0806:
		if len(p) >= 28 {
			sip, tip := netip.AddrFrom4([4]byte(p[14:18])), netip.AddrFrom4([4]byte(p[24:28]))
			if sip == w.vip && tip == w.vip {
				return "garp"
			}
		}
	case 0x0800:
		if len(p) < 20 || p[9] != 6 {
			return ""
		}
		ihl := int(p[0]&0x0f) * 4
		if len(p) < ihl+20 {
			return ""
		}
		src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		tcp := p[ihl:]
		sport, dport := binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint16(tcp[2:4])
		seq, ack := binary.BigEndian.Uint32(tcp[4:8]), binary.BigEndian.Uint32(tcp[8:12])
		flags := tcp[13]
		total := int(binary.BigEndian.Uint16(p[2:4]))
		payload := total - ihl - int(tcp[12]>>4)*4
		switch {
		case src == w.vip && sport == w.port && flags&0x04 != 0:
			return "rst-in"
		case src == w.vip && sport == w.port && flags == 0x10 && seq == 0 && ack == 0:
			return "tickle"
		case dst == w.vip && dport == w.port && flags&0x02 != 0:
			return "syn-out"
		case dst == w.vip && dport == w.port && payload > 0:
			return "data-out"
		case dst == w.vip && dport == w.port && flags&0x04 == 0:
			return "ack-out"
		}
	}
	return ""
}

// since lists the events of kind at or after t0.
func (w *vipWire) since(t0 time.Time, kind string) []wireEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []wireEvent
	for _, e := range w.events {
		if !e.at.Before(t0) && e.kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// breakdown is (b)'s outage split on the host's clock, from the kill: the
// first gratuitous ARP for the VIP from another MAC than the dead holder's
// (the takeover), the first tickle ACK, the first reset the client got, the
// client's first new connection (SYN) and the resumption; and how the client's
// own segments to the dead holder went meanwhile (retransmissions). Guest
// lines give the decision's reason on the new holder's own clock, anchored at
// its first announcement (the takeover's gratuitous ARP on the host's clock).
func (w *vipWire) breakdown(t0 time.Time, oldMAC string, detect, outage time.Duration, guestLog string) (string, float64) {
	sec := func(t time.Time) string {
		if t.IsZero() {
			return "?"
		}
		return fmt.Sprintf("%.2f s", t.Sub(t0).Seconds())
	}
	first := func(kind string, ok func(wireEvent) bool) time.Time {
		for _, e := range w.since(t0, kind) {
			if ok == nil || ok(e) {
				return e.at
			}
		}
		return time.Time{}
	}
	notOld := func(e wireEvent) bool { return e.mac != oldMAC }
	garp := first("garp", notOld)
	tickle := first("tickle", nil)
	rst := first("rst-in", nil)
	syn := first("syn-out", nil)
	retrans := 0
	for _, e := range w.since(t0, "data-out") {
		if garp.IsZero() || e.at.Before(garp) {
			retrans++
		}
	}
	takeover := -1.0
	if !garp.IsZero() {
		takeover = garp.Sub(t0).Seconds()
	}
	s := fmt.Sprintf("kill → takeover (first gratuitous ARP for the VIP from the new holder) %s; → first tickle ACK %s; → client got a reset %s; "+
		"client saw its connection fail %.2f s; → new connection (SYN) %s; → TLS, SASL, resumed %.2f s; the client sent %d segments with data towards the dead holder before the takeover",
		sec(garp), sec(tickle), sec(rst), detect.Seconds(), sec(syn), outage.Seconds(), retrans)
	if g := guestTimeline(guestLog, garp, t0); g != "" {
		s += "; the new holder's log (its clock anchored at its first announcement): " + g
	}
	return s, takeover
}

var guestLineRe = regexp.MustCompile(`time=(\S+) [^\n]*?msg="([^"]+)"([^\n]*)`)

// guestTimeline picks the new holder's log lines about the failover, each as
// seconds after the kill, with the clock offset taken from its "vip added"
// line, which the gratuitous ARP seen at garp (host clock) follows at once.
func guestTimeline(log string, garp, t0 time.Time) string {
	if garp.IsZero() {
		return ""
	}
	type line struct {
		at  time.Time
		msg string
	}
	var lines []line
	var anchor time.Time
	for _, m := range guestLineRe.FindAllStringSubmatch(log, -1) {
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		msg := m[2]
		if msg == "vip added" && anchor.IsZero() || msg == "vip added" && at.After(anchor) {
			anchor = at
		}
		for _, k := range []string{"vip: holder silent", "vip state", "vip added", "vip takeover", "node silent", "resuming a session",
			"session handed over", "the node holding the session", "member failed", "memberlist: Suspect", "memberlist: Marking", "vip: this node's loop was stalled"} {
			if strings.HasPrefix(msg, k) {
				lines = append(lines, line{at, msg + extraOf(m[3])})
				break
			}
		}
	}
	if anchor.IsZero() {
		return ""
	}
	off := garp.Sub(anchor)
	var out []string
	for _, l := range lines {
		d := l.at.Add(off).Sub(t0)
		if d < -2*time.Second || d > 10*time.Second {
			continue
		}
		out = append(out, fmt.Sprintf("%.2f s %s", d.Seconds(), l.msg))
	}
	return strings.Join(out, "; ")
}

// extraOf keeps a log line's node= / peer= / from= / to= / silent_for= attributes.
func extraOf(attrs string) string {
	var keep []string
	for _, f := range strings.Fields(attrs) {
		for _, k := range []string{"node=", "peer=", "member=", "from=", "to=", "silent_for=", "connections=", "sent="} {
			if strings.HasPrefix(f, k) {
				keep = append(keep, f)
			}
		}
	}
	if len(keep) == 0 {
		return ""
	}
	return " (" + strings.Join(keep, " ") + ")"
}
