package ctl

import (
	"fmt"
	"io"
)

// xmppctl vip (the VIP feature's admin command): which node holds each VIP of the
// pool, why (the allocator's reason), since when, this node's state for it, and the
// health inputs (checks with rise/fall/weight, effective priority, quorum, the
// nodes of the view).

func init() {
	register(Command{"vip", "[in-service on|off]", "VIP pool: holder of each VIP, why, since when; this node's health checks, priority and view; in-service on|off puts this node in or out of service (a spare) until its restart", 0, 2}, renderVIP)
}

func renderVIP(w io.Writer, _ []string, v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		kv(w, v, "")
		return nil
	}
	if m["configured"] != true {
		fmt.Fprintf(w, "node %s: %s\n", cell(m["node"]), cell(m["note"]))
		return nil
	}
	fmt.Fprintf(w, "node %s  interface %s  priority %s  healthy %v  in-service %v  preempt %v  quorum %v (%s nodes seen of %s known)\n",
		cell(m["node"]), cell(m["interface"]), cell(m["priority"]), m["healthy"] == true, m["in_service"] == true,
		m["preempt"] == true, m["quorum"] == true, fmt.Sprint(len(asList(m["nodes"]))), cell(m["known"]))
	if n := cell(m["note"]); n != "-" {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	table(w, asMaps(m["vips"]), "vip", "holder", "state", "since", "held_since", "tickled", "reason")
	fmt.Fprintln(w, "health checks:")
	table(w, asMaps(m["tracks"]), "name", "up", "weight", "rise", "fall", "successes", "failures", "since", "last_error")
	fmt.Fprintln(w, "view:")
	table(w, asMaps(m["nodes"]), "name", "healthy", "in_service", "priority", "preemptible", "holds")
	if ad := asMaps(m["adverts"]); len(ad) > 0 {
		fmt.Fprintln(w, "adverts heard (a holder silent past its dead interval loses its VIPs):")
		table(w, ad, "node", "interval", "dead_interval", "last_ago", "count", "missed", "max_gap", "silent", "silences")
	}
	if own, ok := m["own_adverts"].(map[string]any); ok {
		fmt.Fprintf(w, "own adverts: %s sent every %s, longest gap %s, send errors %s; this node's loop stalls: %s\n",
			cell(own["count"]), cell(own["interval"]), cell(own["max_gap"]), cell(own["missed"]), cell(m["stalls"]))
	}
	if ev := asMaps(m["events"]); len(ev) > 0 {
		fmt.Fprintln(w, "recent transitions:")
		table(w, ev, "at", "vip", "from", "to", "reason")
	}
	return nil
}
