//go:build !linux

package c2s

import (
	"errors"
	"syscall"
)

// Elsewhere every session's output goes through its own writer and reads go
// through the connection as they are (newTryConn returns nil).
const canWriteNoWait = false

type sockOp struct{}

var errLinuxOnly = errors.New("c2s: raw socket calls are Linux-only")

func writeNoWait(syscall.RawConn, *sockOp, []byte) (int, error) { return 0, errLinuxOnly }

func readRaw(syscall.RawConn, *sockOp, []byte) (int, error) { return 0, errLinuxOnly }
