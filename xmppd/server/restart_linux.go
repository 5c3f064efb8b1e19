package server

import (
	"os"
	"syscall"
)

// restartSelf replaces the process with a fresh run of the same binary and
// arguments (same PID: a supervisor or a test keeps tracking it). Files and
// sockets are close-on-exec, so the data directory lock and ports are free.
func restartSelf() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, os.Args, os.Environ())
}
