package c2s

import (
	"errors"
	"net"
)

// ServeConn runs one client stream on nc, a connection some other listener
// accepted (the WebSocket endpoint, RFC 7395, through a net.Conn that speaks the
// plain stream framing). secure says the transport is already encrypted (HTTPS,
// or TLS terminated by a trusted proxy): then STARTTLS is not offered. The stream
// waits for input in this goroutine (no poller); ServeConn returns when the
// stream has ended and nc is closed.
func (s *Server) ServeConn(nc net.Conn, secure bool) error {
	c := newConn(s, nc, false)
	c.secure = secure
	c.noPark, c.noAsync = true, true
	s.mu.Lock()
	if s.stopping || s.draining || s.baseCtx == nil {
		s.mu.Unlock()
		nc.Close()
		return errors.New("c2s: not accepting streams")
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	c.serve()
	return nil
}
