//go:build !linux

package c2s

import (
	"errors"
	"log/slog"
)

// poller is unavailable here: idle streams park in their own goroutine (idle.go).
type poller struct{}

func newPoller(*slog.Logger) (*poller, error) { return nil, errors.New("c2s: no epoll on this OS") }

func (p *poller) park(*conn) parkResult { return parkUnsupported }
func (p *poller) wake(*conn)            {}
func (p *poller) stop()                 {}
func (p *poller) stats() (int, int)     { return 0, 0 }
