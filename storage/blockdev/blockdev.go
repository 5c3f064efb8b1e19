// Package blockdev owns the storage.BlockDevice implementations that are not a
// LUN: File (a regular file or a block device node on a host with a local
// disk), Mem (RAM, for tests) and Fault (wraps another device and simulates a
// crash or a dying disk at the Nth write, for crash tests).
//
// Every device here accepts only block-aligned writes (offset and length
// multiples of BlockSize), as the iSCSI LUN does, so code tested against them
// also works on the LUN.
//
// blockdev imports only the storage contract; it must not import xmppd, iscsi or
// init.
package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"xedge/storage"
)

var (
	// ErrUnaligned is returned for a write whose offset or length is not a
	// multiple of the block size.
	ErrUnaligned = errors.New("blockdev: unaligned write")
	// ErrOutOfRange is returned for an access past the end of the device.
	ErrOutOfRange = errors.New("blockdev: access past the end of the device")
	// ErrInjected is the error Fault returns once it has failed.
	ErrInjected = errors.New("blockdev: injected device failure")
)

func checkWrite(p []byte, off, size int64, bs int) error {
	if off%int64(bs) != 0 || len(p)%bs != 0 {
		return fmt.Errorf("%w: %d bytes at %d (block size %d)", ErrUnaligned, len(p), off, bs)
	}
	return checkRange(len(p), off, size)
}

func checkRange(n int, off, size int64) error {
	if off < 0 || off+int64(n) > size {
		return fmt.Errorf("%w: %d bytes at %d, size %d", ErrOutOfRange, n, off, size)
	}
	return nil
}

// File is a BlockDevice on a file. Sync is fdatasync.
type File struct {
	f    *os.File
	size int64
	bs   int
}

var _ storage.BlockDevice = (*File)(nil)

// OpenFile opens (creating if needed) a file-backed device of size bytes with
// 512-byte blocks. An existing regular file smaller than size is extended; a
// larger one keeps its size (rounded down to whole blocks).
func OpenFile(path string, size int64) (*File, error) {
	const bs = 512
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
	}
	cur, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: size of %s: %w", path, err)
	}
	if cur < size {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, fmt.Errorf("blockdev: extend %s: %w", path, err)
		}
		cur = size
	}
	cur -= cur % bs
	if cur < 64<<10 {
		f.Close()
		return nil, fmt.Errorf("blockdev: %s: %d bytes is too small (need a size of at least 64 KiB)", path, cur)
	}
	return &File{f: f, size: cur, bs: bs}, nil
}

// ParseSpec parses a --storage value of the form "file:PATH" or
// "file:PATH?size=BYTES" (size defaults to 1 GiB).
func ParseSpec(spec string) (path string, size int64, err error) {
	rest, ok := strings.CutPrefix(spec, "file:")
	if !ok || rest == "" {
		return "", 0, fmt.Errorf("blockdev: storage spec %q: want file:PATH[?size=BYTES]", spec)
	}
	size = 1 << 30
	if p, q, ok := strings.Cut(rest, "?"); ok {
		rest = p
		v, ok := strings.CutPrefix(q, "size=")
		if !ok {
			return "", 0, fmt.Errorf("blockdev: storage spec %q: unknown option %q", spec, q)
		}
		if _, err := fmt.Sscan(v, &size); err != nil || size <= 0 {
			return "", 0, fmt.Errorf("blockdev: storage spec %q: bad size %q", spec, v)
		}
	}
	return rest, size, nil
}

func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if err := checkRange(len(p), off, d.size); err != nil {
		return 0, err
	}
	n, err := d.f.ReadAt(p, off)
	if err != nil {
		return n, fmt.Errorf("blockdev: read: %w", err)
	}
	return n, nil
}

func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if err := checkWrite(p, off, d.size, d.bs); err != nil {
		return 0, err
	}
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("blockdev: write: %w", err)
	}
	return n, nil
}

// Sync flushes completed writes to stable storage (fdatasync).
func (d *File) Sync() error {
	if err := fdatasync(d.f); err != nil {
		return fmt.Errorf("blockdev: sync: %w", err)
	}
	return nil
}

func (d *File) Size() int64    { return d.size }
func (d *File) BlockSize() int { return d.bs }

// Close closes the file.
func (d *File) Close() error { return d.f.Close() }

// Mem is a BlockDevice in RAM. Its Sync does nothing: every write is "durable"
// at once (wrap it in a Fault to model a volatile cache).
type Mem struct {
	mu  sync.RWMutex
	buf []byte
	bs  int
}

var _ storage.BlockDevice = (*Mem)(nil)

// NewMem returns a zeroed device of size bytes (rounded down to blocks).
func NewMem(size int64, blockSize int) *Mem {
	size -= size % int64(blockSize)
	return &Mem{buf: make([]byte, size), bs: blockSize}
}

// MemFrom returns a device holding a copy of img.
func MemFrom(img []byte, blockSize int) *Mem {
	return &Mem{buf: append([]byte(nil), img...), bs: blockSize}
}

func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := checkRange(len(p), off, int64(len(m.buf))); err != nil {
		return 0, err
	}
	return copy(p, m.buf[off:]), nil
}

func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := checkWrite(p, off, int64(len(m.buf)), m.bs); err != nil {
		return 0, err
	}
	return copy(m.buf[off:], p), nil
}

func (m *Mem) Sync() error    { return nil }
func (m *Mem) Size() int64    { return int64(len(m.buf)) }
func (m *Mem) BlockSize() int { return m.bs }
func (m *Mem) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.buf...)
}

// Switchable wraps a device that can be failed and healed at run time (tests
// of storage loss and re-persist): while down, every write and sync returns
// ErrDown; reads still work.
type Switchable struct {
	storage.BlockDevice
	mu   sync.RWMutex
	down bool
}

// ErrDown is what a Switchable returns while down.
var ErrDown = errors.New("blockdev: device down")

// SetDown fails (true) or heals (false) the device.
func (s *Switchable) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Replace swaps the wrapped device (a replaced disk).
func (s *Switchable) Replace(d storage.BlockDevice) {
	s.mu.Lock()
	s.BlockDevice = d
	s.mu.Unlock()
}

func (s *Switchable) dev() (storage.BlockDevice, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.BlockDevice, s.down
}

func (s *Switchable) ReadAt(p []byte, off int64) (int, error) {
	d, _ := s.dev()
	return d.ReadAt(p, off)
}

func (s *Switchable) WriteAt(p []byte, off int64) (int, error) {
	d, down := s.dev()
	if down {
		return 0, ErrDown
	}
	return d.WriteAt(p, off)
}

func (s *Switchable) Sync() error {
	d, down := s.dev()
	if down {
		return ErrDown
	}
	return d.Sync()
}

func (s *Switchable) Size() int64 {
	d, _ := s.dev()
	return d.Size()
}

func (s *Switchable) BlockSize() int {
	d, _ := s.dev()
	return d.BlockSize()
}
