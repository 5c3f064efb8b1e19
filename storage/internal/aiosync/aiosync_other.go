//go:build !(linux && (amd64 || arm64))

package aiosync

import "golang.org/x/sys/unix"

func fdatasync(fd int) error {
	fallback.Add(1)
	return unix.Fsync(fd)
}
