package pep

import (
	"xedge/xmppd/caps"
	"xedge/xmppd/xmlstream"
)

// capsVer computes the XEP-0115 §5.1 verification string of a disco#info result
// with SHA-1 (identities, features, then extended forms, each sorted).
func capsVer(q *xmlstream.Element) string { return caps.Ver(q) }
