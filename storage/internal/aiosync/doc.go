// Package aiosync makes an fdatasync that does not hold the Go scheduler's P
// while the disk works.
//
// A plain fdatasync is a blocking system call: its goroutine keeps its P until
// the runtime's monitor takes it back, which it does only after a full tick of
// its own (up to 10 ms on a busy process whose other system calls are short).
// With one P (a one-CPU machine, affinity or cgroup) nothing else runs
// meanwhile. On Linux, Fdatasync submits the sync as an asynchronous request
// (Linux AIO, IOCB_CMD_FDSYNC: the kernel runs vfs_fsync(file, datasync) in a
// worker) that signals an eventfd, and waits for that eventfd in Go's netpoller,
// as a socket read waits: the P runs other goroutines until the disk is done.
// Where AIO is unavailable (no CONFIG_AIO, no context left under fs.aio-max-nr,
// a file the kernel cannot sync asynchronously) it falls back to the plain
// system call; the durability is the same either way.
//
// It owns only its AIO contexts and eventfds; it must not import the storage
// packages that use it (storage/local, storage/blockdev).
package aiosync
