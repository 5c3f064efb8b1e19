// Package listen opens TCP listeners and runs their accept loops for xmppd's
// stream servers (components, server-to-server). It owns no protocol: what a
// connection becomes is the caller's. It must not import anything of xmppd.
package listen

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Open listens on every address, or on none: when one fails, those already
// opened are closed and the error names the address.
func Open(addrs []string) ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Serve hands each connection accepted on ln to handle until ln is closed or
// handle returns false (the server is stopping; handle closed the connection).
// Other Accept errors (out of file descriptors) are logged and retried after
// a pause, so a burst of them does not spin.
func Serve(ln net.Listener, log *slog.Logger, handle func(net.Conn) bool) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Warn("accept", "addr", ln.Addr().String(), "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !handle(nc) {
			return
		}
	}
}
