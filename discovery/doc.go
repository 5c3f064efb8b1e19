// Package discovery finds and joins peers: Serf membership (keyring derived from the
// cluster key), bounded subnet scan, reverse DNS, static and DNS seeds, auto-join, and
// DNS SRV publishing (embedded authoritative server and RFC 2136 updates).
//
// It must not contain XMPP logic; xmppd consumes its membership view.
package discovery
