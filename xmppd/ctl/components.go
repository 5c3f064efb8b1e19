package ctl

import "io"

// xmppctl components (the external component feature's admin command): each
// configured component domain (XEP-0114) and the node it is connected to.

func init() {
	register(Command{"components", "", "external components (XEP-0114): each configured domain and the node it is connected to (- = none)", 0, 0}, renderComponents)
}

func renderComponents(w io.Writer, _ []string, v any) error {
	table(w, asMaps(v), "domain", "node")
	return nil
}
