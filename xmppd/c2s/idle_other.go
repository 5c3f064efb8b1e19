//go:build !linux

package c2s

import "net"

// waitReadable is unavailable here: idle streams keep their decoder buffer.
func waitReadable(net.Conn) (ok bool, err error) { return false, nil }
