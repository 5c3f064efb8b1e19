// Package integration holds the feature modules' integration tests (build tag
// integration): they build and start a real xmppd on loopback, create accounts with
// xmppctl and drive python3-slixmpp clients (testdata/scenarios.py) against it, one
// scenario per module behaviour. It has no non-test code.
package integration
