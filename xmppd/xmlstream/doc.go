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
// ENGINEERS WORKING ON THIS PACKAGE NOW: read /work/main/TEAM.md first (commit rules,
// build tags, deadline 02:05 UTC, what not to touch). Remove this note when you have.
package xmlstream
