package ctl

import "io"

// xmppctl s2s (the federation feature's admin command): the outgoing links of
// this node and the peer domains authenticated on its incoming streams.

func init() {
	register(Command{"s2s", "", "server-to-server links of this node: domain, direction, state, authentication (sasl-external or dialback), TLS, certificate verified, queued stanzas, peer address, node holding it (state remote: another node owns the link, this one forwards to it)", 0, 0}, renderS2S)
}

func renderS2S(w io.Writer, _ []string, v any) error {
	table(w, asMaps(v), "domain", "direction", "state", "auth", "tls", "verified", "queued", "remote", "node")
	return nil
}
