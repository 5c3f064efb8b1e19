package server

import (
	"testing"

	"xedge/xmppd/c2s"
	"xedge/xmppd/mod/disco"
)

// The caps node the streams advertise is the one the disco module answers for.
func TestCapsNodeMatchesDisco(t *testing.T) {
	if c2s.CapsNode != disco.CapsNode {
		t.Fatalf("c2s advertises caps node %q, disco answers %q", c2s.CapsNode, disco.CapsNode)
	}
}
