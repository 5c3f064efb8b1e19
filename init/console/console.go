// Package console owns the node's serial console: one-line status messages
// ("xedge: ready 10.0.2.15 v1") and the restricted admin shell, which offers only the
// commands it is given (xmppctl's plus init's own), with history and completion.
//
// It must not import xmppd, netcfg or the supervisor: callers hand it commands.
package console

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// Console writes status lines to the serial console.
type Console struct {
	mu  sync.Mutex
	out io.Writer
}

// New returns a console writing to out (the tty).
func New(out io.Writer) *Console { return &Console{out: out} }

// Say prints one "xedge: ..." line. Lines start and end with CRLF-safe breaks so they
// stay readable while the shell's line editor holds the terminal in raw mode.
func (c *Console) Say(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	msg = strings.ReplaceAll(msg, "\n", "\r\n        ")
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, "\r\nxedge: %s\r\n", msg)
}

// Write lets the console serve as a plain writer (serialised with Say).
func (c *Console) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(b)
}
