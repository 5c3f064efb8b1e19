// Package xmlstream is xmppd's XML layer: a streaming tokenizer for XMPP's XML subset,
// a decoder that turns a stream into a header plus top-level Elements (stanzas and
// nonzas), and an encoder that serializes Elements back.
//
// It owns: well-formedness checks, namespace resolution, the limits that protect the
// server (stanza size, nesting depth, attribute count, name length) and the rejection
// of everything RFC 6120 §11.1 forbids (DOCTYPE, entity declarations, processing
// instructions other than the XML declaration, comments). Limit and restriction
// violations are returned as *Error values whose Condition names the stream error
// the caller must send (not-well-formed, restricted-xml, policy-violation, ...).
//
// It must not import anything from xmppd: it knows XML, not XMPP semantics.
//
// Decoding is two passes per top-level element: a resumable framer (frame.go) finds the
// element's end in arbitrarily chunked input without rescanning, enforcing MaxStanza and
// MaxDepth the moment they are crossed; then build (build.go) parses the complete element
// from one string and builds the tree, with names, namespaces and unescaped text as
// substrings of it. See docs/xmlstream.md for what is accepted and rejected, and why.
package xmlstream
