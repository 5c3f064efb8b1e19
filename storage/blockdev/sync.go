package blockdev

import (
	"os"

	"xedge/storage/internal/aiosync"
)

// fdatasync waits for the disk in the netpoller, so a sync of the group commit
// does not stop the rest of a process that has one P (storage/internal/aiosync).
func fdatasync(f *os.File) error { return aiosync.Fdatasync(f) }
