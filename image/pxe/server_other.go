//go:build !linux

package pxe

import (
	"context"
	"errors"
)

// Server is the PXE server; it runs on Linux only.
type Server struct{ cfg Config }

// New fails on this OS.
func New(cfg Config) (*Server, error) { return nil, errors.New("pxe: Linux only") }

// Start fails on this OS.
func (s *Server) Start(context.Context) error { return errors.New("pxe: Linux only") }

// Stop does nothing.
func (s *Server) Stop(context.Context) error { return nil }

// URL is the boot server's URL.
func (s *Server) URL() string { return URL(s.cfg.ServerIP, s.cfg.HTTPPort) }

// Boxes lists nothing.
func (s *Server) Boxes() []BoxInfo { return nil }
