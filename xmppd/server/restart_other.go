//go:build !linux

package server

import "errors"

func restartSelf() error { return errors.New("restart in place is supported on Linux only") }
