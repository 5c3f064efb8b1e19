//go:build integration && linux

package vipfailover

import (
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// advertStatus is what this test reads of `xmppctl --json vip`: the adverts
// a node heard, its own, its loop stalls and its VIP transitions.
type advertStatus struct {
	VIPs []struct {
		Holder string `json:"holder"`
		State  string `json:"state"`
	} `json:"vips"`
	Adverts []struct {
		Node     string `json:"node"`
		MaxGap   string `json:"max_gap"`
		Count    uint64 `json:"count"`
		Silences int    `json:"silences"`
	} `json:"adverts"`
	OwnAdverts *struct {
		MaxGap string `json:"max_gap"`
	} `json:"own_adverts"`
	Stalls int               `json:"stalls"`
	Events []json.RawMessage `json:"events"`
}

func (h *harness) advertStatus(n *node) (advertStatus, error) {
	var st advertStatus
	return st, h.vipJSON(n, 5*time.Second, &st)
}

// TestVIPAdvertsNoFalseFailoverUnderLoad: a backup takes a holder's VIP over
// once the holder's adverts stopped for 4 intervals (0.8 s by default), well
// before the cluster declares it failed; a live holder must never look dead.
// Three xmppd with the default adverts hold one VIP while the host's CPUs are
// oversubscribed three times over by busy processes for 30 s and a client
// sits on the VIP: no node finds the holder silent, no VIP changes state on
// any node, the client's connection still answers a ping. The longest gaps
// between adverts (as heard, and as sent) and the nodes' loop stalls are
// reported: the margin left below the dead interval.
func TestVIPAdvertsNoFalseFailoverUnderLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs integration tests as root)")
	}
	h, err := newHarness(Options{Dir: t.TempDir(), Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.teardown()
	holder, err := h.holder(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.login(10 * time.Second)
	if err != nil {
		t.Fatalf("login through the VIP: %v", err)
	}
	defer c.Abort()
	events := map[string]int{}
	for _, n := range h.nodes {
		st, err := h.advertStatus(n)
		if err != nil {
			t.Fatal(err)
		}
		events[n.name] = len(st.Events)
	}

	hogs := 3 * runtime.NumCPU()
	var procs []*exec.Cmd
	for range hogs {
		p := exec.Command("sh", "-c", "while :; do :; done")
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	stopHogs := func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
		procs = nil
	}
	defer stopHogs()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		for _, n := range h.nodes {
			st, err := h.advertStatus(n)
			if err != nil {
				continue // an admin call that timed out under load says nothing
			}
			if len(st.VIPs) != 1 || st.VIPs[0].Holder != holder.name {
				t.Errorf("under load, %s plans the VIP for %+v, want %s", n.name, st.VIPs, holder.name)
			}
		}
	}
	stopHogs()

	var gaps []string
	for _, n := range h.nodes {
		st, err := h.advertStatus(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Events) != events[n.name] {
			t.Errorf("%s: %d VIP transitions under load", n.name, len(st.Events)-events[n.name])
		}
		own := "-"
		if st.OwnAdverts != nil {
			own = st.OwnAdverts.MaxGap
		}
		heard := []string{}
		for _, a := range st.Adverts {
			heard = append(heard, a.Node+" "+a.MaxGap)
			if a.Silences != 0 {
				t.Errorf("%s found %s silent %d times under load (a false failover)", n.name, a.Node, a.Silences)
			}
			if a.Count == 0 {
				t.Errorf("%s heard no adverts of %s", n.name, a.Node)
			}
		}
		if len(st.Adverts) != len(h.nodes)-1 {
			t.Errorf("%s heard the adverts of %d peers, want %d", n.name, len(st.Adverts), len(h.nodes)-1)
		}
		gaps = append(gaps, n.name+": sent "+own+", heard "+strings.Join(heard, ", ")+", loop stalls "+strconv.Itoa(st.Stalls))
	}
	t.Logf("longest advert gaps with %d busy processes on %d CPUs for 30 s (dead interval 800 ms): %s", hogs, runtime.NumCPU(), strings.Join(gaps, "; "))
	if err := h.inClient(func() error { return c.Ping(func([]byte) error { return nil }) }); err != nil {
		t.Errorf("the client's connection through the VIP after the load: %v", err)
	}
}
