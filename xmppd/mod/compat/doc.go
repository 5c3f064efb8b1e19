// Package compat holds the compatibility suite (integration tests only): the same
// slixmpp scenarios — PEP publish and notify, MAM queries, MUC join, messages and
// history, Bookmarks 2, HTTP upload slots — run against ejabberd and Prosody
// (Debian's packages, started by the test) and against xmppd, and xmppd must
// behave as they do wherever they support the feature.
//
// It owns no server code; it may import the benchmark's server starter
// (bench/servers) and xmppd's test environment, and nothing of xmppd's core.
package compat
