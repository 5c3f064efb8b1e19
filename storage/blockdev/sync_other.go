//go:build !linux

package blockdev

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
