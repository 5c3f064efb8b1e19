package aiosync

import (
	"fmt"
	"os"
	"sync/atomic"
)

// Stats counts how syncs were done since the process started.
type Stats struct {
	Async    uint64 // through AIO, waited for in the netpoller
	Fallback uint64 // as a plain blocking fdatasync
}

var async, fallback atomic.Uint64

// Counts returns the sync counters.
func Counts() Stats { return Stats{Async: async.Load(), Fallback: fallback.Load()} }

// Fdatasync flushes f's data (and the metadata needed to read it back) to
// stable storage, as fdatasync(2), without holding the caller's P while the
// device works where the platform allows.
func Fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = fdatasync(int(fd)) }); err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	if serr != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), serr)
	}
	return nil
}
