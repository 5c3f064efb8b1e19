//go:build !linux

package c2s

import (
	"errors"
	"syscall"
)

// Elsewhere every session's output goes through its own writer (newTryConn
// returns nil).
const canWriteNoWait = false

type nowait struct{}

func writeNoWait(syscall.RawConn, *nowait, []byte) (int, error) {
	return 0, errors.New("c2s: writes without waiting are Linux-only")
}
