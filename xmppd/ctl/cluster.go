package ctl

import (
	"fmt"
	"io"
)

// xmppctl cluster ... (the cluster bus feature's admin command) and
// `sessions --all-nodes`.

func init() {
	register(Command{"cluster", "members|join ADDR [--force]|leave|forget NODE|drain|undrain",
		"cluster membership: list members (node, address, state, incarnation, sessions, storage role), join the cluster at ADDR (this node's tables are discarded: --force when it has data), leave, forget a dead node, drain/undrain client sessions", 1, 3},
		renderCluster)
	for i := range commands {
		if commands[i].Name == "sessions" {
			commands[i].Usage, commands[i].MaxArgs = "[--all-nodes]", 1
			commands[i].Summary = "list connected sessions (--all-nodes: of every node of the cluster)"
		}
	}
	renderers["sessions"] = renderSessions
}

func renderCluster(w io.Writer, args []string, v any) error {
	if len(args) > 0 && args[0] == "members" {
		table(w, asMaps(v), "node", "addr", "state", "incarnation", "sessions", "storage", "c2s", "bus", "gossip")
		return nil
	}
	if s, ok := v.(string); ok {
		fmt.Fprintln(w, s)
		return nil
	}
	kv(w, v, "")
	return nil
}

func renderSessions(w io.Writer, args []string, v any) error {
	if len(args) > 0 {
		table(w, asMaps(v), "node", "jid", "addr", "tls", "priority", "sm", "since")
		return nil
	}
	table(w, asMaps(v), "jid", "addr", "tls", "mechanism", "priority", "sm", "csi", "detached", "since")
	return nil
}
