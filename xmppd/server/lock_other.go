//go:build !linux

package server

import "context"

// dataLock is a no-op outside Linux (xmppd runs on Linux; this keeps tests building).
type dataLock struct{ path string }

func (*dataLock) Start(context.Context) error { return nil }
func (*dataLock) Stop(context.Context) error  { return nil }

// lockDevice is a no-op outside Linux.
func lockDevice(string) (interface{ Close() error }, error) { return nopCloser{}, nil }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
