package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// dataLock holds an exclusive flock on <data>/xmppd.lock for the life of the
// process, so a second xmppd on the same data directory fails before it touches
// the storage (and the admin socket).
type dataLock struct {
	path string
	f    *os.File
}

func (l *dataLock) Start(context.Context) error {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock %s: %w", l.path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(l.path)
		f.Close()
		return fmt.Errorf("data directory %s is in use by another xmppd (pid %s): %w", filepath.Dir(l.path), string(pid), err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)
	l.f = f
	return nil
}

func (l *dataLock) Stop(context.Context) error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close() // releases the flock; the file stays (removing it would race a new owner)
	l.f = nil
	return err
}

// lockDevice takes an exclusive flock on a file-backed storage device, so two
// xmppd processes (with different data directories) cannot write the same image.
// The returned file holds the lock until closed.
func lockDevice(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("lock storage device %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("storage device %s is in use by another process: %w", path, err)
	}
	return f, nil
}
