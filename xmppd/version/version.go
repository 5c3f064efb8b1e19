// Package version holds xmppd's version string, set at link time with
// -ldflags "-X xedge/xmppd/version.Version=...". It imports nothing.
package version

// Version is the build's version ("dev" when not set by the Makefile).
var Version = "dev"
