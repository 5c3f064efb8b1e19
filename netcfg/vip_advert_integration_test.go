//go:build integration && linux

package netcfg

import (
	"context"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestVIPAdvertsFlowAndStayRegularUnderLoad: nodes a and b send VIP adverts
// every 100 ms on one segment, x too but with another cluster's key. b hears
// a's adverts in sequence and never its own or x's. With the host's CPUs
// saturated by busy processes (twice as many as CPUs) for 5 s, the longest
// gap between two of a's adverts at b stays below the dead interval a backup
// uses (4 intervals): CPU load alone does not make a live holder look dead.
// Once a's link is down, b hears nothing more from a.
func TestVIPAdvertsFlowAndStayRegularUnderLoad(t *testing.T) {
	l := newLAN(t, "adv", "10.78.0")
	l.add("a", 1)
	l.add("b", 2)
	l.add("x", 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key, other := AdvertKey([]byte("cluster one")), AdvertKey([]byte("cluster two"))
	const iv = 100 * time.Millisecond

	var mu sync.Mutex
	heard := map[string][]Advert{}
	start := func(name string, key []byte, onAdvert func(Advert)) *VIPs {
		t.Helper()
		var v *VIPs
		h := l.hosts[name]
		if err := inNS(t, h, func() error {
			var err error
			if v, err = NewVIPs(VIPOptions{Interface: "eth0", Refresh: -1, AdvertNode: name, AdvertInterval: iv, AdvertKey: key, OnAdvert: onAdvert}); err != nil {
				return err
			}
			return v.Start(ctx)
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { inNS(t, h, func() error { return v.Stop(context.Background()) }) })
		return v
	}
	va := start("a", key, nil)
	start("b", key, func(a Advert) {
		mu.Lock()
		heard[a.Node] = append(heard[a.Node], a)
		mu.Unlock()
	})
	start("x", other, nil)
	fromA := func() []Advert {
		mu.Lock()
		defer mu.Unlock()
		return append([]Advert(nil), heard["a"]...)
	}
	for deadline := time.Now().Add(5 * time.Second); len(fromA()) < 10; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("b heard %d adverts of a in 5 s, want 10", len(fromA()))
		}
	}
	maxGap := func(as []Advert) time.Duration {
		var g time.Duration
		for i := 1; i < len(as); i++ {
			g = max(g, as[i].At.Sub(as[i-1].At))
		}
		return g
	}
	as := fromA()
	for i, a := range as {
		if a.Interval != iv || a.From.String() != "02:00:00:00:00:01" || (i > 0 && a.Seq <= as[i-1].Seq) {
			t.Fatalf("advert %d of a: %+v (previous %+v)", i, a, as[max(i-1, 0)])
		}
	}
	quiet := maxGap(as)

	// Saturate the host's CPUs.
	n := 2 * runtime.NumCPU()
	var hogs []*exec.Cmd
	for range n {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	before := len(fromA())
	time.Sleep(5 * time.Second)
	for _, c := range hogs {
		c.Process.Kill()
		c.Wait()
	}
	loaded := fromA()[before:]
	gap := maxGap(loaded)
	t.Logf("a's adverts at b: longest gap %v quiet, %v with %d busy processes (%d adverts in 5 s; a sent %+v)", quiet, gap, n, len(loaded), va.Adverts())
	if len(loaded) < 20 || gap >= 4*iv {
		t.Fatalf("under CPU load: %d adverts in 5 s, longest gap %v (dead interval %v)", len(loaded), gap, 4*iv)
	}
	mu.Lock()
	if len(heard["b"]) != 0 || len(heard["x"]) != 0 {
		t.Fatalf("b reported its own adverts (%d) or another cluster's (%d)", len(heard["b"]), len(heard["x"]))
	}
	mu.Unlock()

	ipIn(t, l.ns("a"), "link", "set", "eth0", "down")
	down := time.Now()
	time.Sleep(10 * iv)
	last := fromA()
	if at := last[len(last)-1].At; at.After(down.Add(iv)) {
		t.Fatalf("an advert of a arrived %v after its link went down", at.Sub(down))
	}
}
