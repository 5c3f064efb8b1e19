package netcfg

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Tickle ACKs are paced at the configured rate, so the reconnect wave of a lost
// holder's clients is spread out: 100 tickles at 200/s take at least ~0.5 s
// (a lower bound: a loaded machine only makes them slower), and a cancelled
// context stops the pacing at once. No raw socket here (no root): the sends
// fail, the pacing is the same.
func TestTicklesArePaced(t *testing.T) {
	conns := make([]Conn, 100)
	for i := range conns {
		conns[i] = Conn{Local: netip.MustParseAddrPort("192.0.2.100:5222"),
			Remote: netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:%d", 1+i%250, 40000+i))}
	}
	start := time.Now()
	n, err := sendTickles(context.Background(), map[bool]int{}, conns, 200)
	took := time.Since(start)
	if n != 0 || err == nil || !strings.Contains(err.Error(), "no raw socket") {
		t.Fatalf("without sockets: %d sent, err %v", n, err)
	}
	// 200/s in 10 ms ticks: 2 per tick, 49 pauses.
	if took < 450*time.Millisecond {
		t.Fatalf("100 tickles at 200/s took %v: not paced", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := sendTickles(ctx, map[bool]int{}, conns, 100); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("cancelled pacing: err %v after %v", err, time.Since(start))
	}
	t.Logf("100 tickles at 200/s: %v", took.Round(time.Millisecond))
}
