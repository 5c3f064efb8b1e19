package ctl

import (
	"fmt"
	"io"
)

// xmppctl dns (the DNS publishing feature's admin command): the records the
// embedded server serves, the SRV targets with their priority and weight and
// why, and the state of RFC 2136 updates (who pushes, last result, errors).

func init() {
	register(Command{"dns", "[records]", "DNS publishing: SRV targets (priority, weight, why), serial, RFC 2136 update result; records: every record served", 0, 1}, renderDNS)
}

func renderDNS(w io.Writer, args []string, v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		kv(w, v, "")
		return nil
	}
	if len(args) > 0 && args[0] == "records" {
		for _, r := range asList(m["records"]) {
			fmt.Fprintln(w, r)
		}
		return nil
	}
	listen := cell(m["listen"])
	if listen == "-" {
		listen = "off"
	}
	fmt.Fprintf(w, "zone %s  domain %s  serial %s  changed %s\n", cell(m["zone"]), cell(m["domain"]), whole(m["serial"]), cell(m["changed"]))
	fmt.Fprintf(w, "embedded server: %s  queries: %s  loaded nodes: %s\n", listen, whole(m["queries"]), cell(m["loaded"]))
	table(w, asMaps(m["targets"]), "service", "priority", "weight", "port", "target", "node", "vip", "why")
	u, ok := m["update"].(map[string]any)
	if !ok {
		fmt.Fprintln(w, "rfc2136 updates: off")
		return nil
	}
	fmt.Fprintf(w, "rfc2136 updates to %s zone %s key %s: pusher %s (this node: %v)\n",
		cell(u["server"]), cell(u["zone"]), cell(u["key"]), cell(u["pusher"]), u["this_node"] == true)
	fmt.Fprintf(w, "  last result: %s  last attempt: %s  last success: %s  pushes: %s  consecutive failures: %s\n",
		cell(u["last_result"]), cell(u["last_attempt"]), cell(u["last_success"]), cell(u["pushes"]), cell(u["failures"]))
	if e := cell(u["last_error"]); e != "-" {
		fmt.Fprintf(w, "  last error: %s\n  next retry: %s\n", e, cell(u["next_retry"]))
	}
	if r, ok := u["last_report"].(map[string]any); ok {
		if ch := asList(r["changed"]); len(ch) > 0 {
			fmt.Fprintf(w, "  last change (verified %v): %s\n", r["verified"] == true, cell(ch))
		}
	}
	return nil
}

// whole prints a JSON number as an integer (serials exceed %v's plain range).
func whole(v any) string {
	if f, ok := v.(float64); ok {
		return fmt.Sprintf("%.0f", f)
	}
	return cell(v)
}
