//go:build !linux

package c2s

import "net"

// ackNow is Linux-only (TCP_QUICKACK); elsewhere the kernel's delayed ACK stays.
func ackNow(net.Conn) {}
