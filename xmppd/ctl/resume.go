package ctl

func init() {
	register(Command{"resume", "[detach]",
		"XEP-0198 resumption across the cluster: this node's resumable sessions, copies of other nodes' sessions (orphans: of gone nodes), peers; detach: close every resumable session's connection, keeping the session (clients resume on any node)", 0, 1}, nil)
}
