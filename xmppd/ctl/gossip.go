package ctl

import "io"

// xmppctl gossip: the node's Serf membership view (discovery feature).

func init() {
	register(Command{"gossip", "",
		"gossip membership seen from this node: node, gossip address, state (alive/suspect/failed/left), reverse DNS name, how it was found (seed, dns, scan, gossip), role, raft membership, storage, sessions", 0, 0},
		func(w io.Writer, args []string, v any) error {
			table(w, asMaps(v), "node", "addr", "state", "dns_name", "found_by", "role", "cluster", "cluster_addr", "storage", "sessions")
			return nil
		})
}
