package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Console is a VM's serial console seen from the host: everything the guest printed
// is kept, Expect waits for text after a cursor, Send types a line.
type Console struct {
	conn net.Conn
	mu   sync.Mutex
	buf  strings.Builder
	pos  int // Expect cursor
	more chan struct{}
	done chan struct{}
	err  error
}

// DialConsole connects to a qemu serial chardev socket, retrying until ctx ends
// (qemu creates the socket shortly after it starts).
func DialConsole(ctx context.Context, path string) (*Console, error) {
	var lastErr error
	for i := 0; i < 1000 && ctx.Err() == nil; i++ {
		c, err := net.Dial("unix", path)
		if err == nil {
			return newConsole(c), nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("console %s: %w", path, lastErr)
}

func newConsole(c net.Conn) *Console {
	con := &Console{conn: c, more: make(chan struct{}), done: make(chan struct{})}
	go con.read()
	return con
}

func (c *Console) read() {
	defer close(c.done)
	b := make([]byte, 4096)
	for {
		n, err := c.conn.Read(b)
		c.mu.Lock()
		if n > 0 {
			c.buf.Write(b[:n])
		}
		if err != nil {
			c.err = err
		}
		close(c.more)
		c.more = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Output returns everything the console printed so far.
func (c *Console) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// Expect waits until re matches the output after the cursor, moves the cursor past
// the match and returns the submatches (index 0: the whole match).
func (c *Console) Expect(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	for {
		c.mu.Lock()
		s := c.buf.String()[c.pos:]
		if loc := re.FindStringSubmatchIndex(s); loc != nil {
			m := make([]string, len(loc)/2)
			for i := range m {
				if loc[2*i] >= 0 {
					m[i] = s[loc[2*i]:loc[2*i+1]]
				}
			}
			c.pos += loc[1]
			c.mu.Unlock()
			return m, nil
		}
		more, err := c.more, c.err
		c.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("console closed waiting for %q: %w", re, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %q: %w; last output:\n%s", re, ctx.Err(), tail(s, 1500))
		case <-more:
		}
	}
}

// ExpectString is Expect for a literal string.
func (c *Console) ExpectString(ctx context.Context, s string) error {
	_, err := c.Expect(ctx, regexp.MustCompile(regexp.QuoteMeta(s)))
	return err
}

// Skip moves the cursor to the end of the output seen so far.
func (c *Console) Skip() {
	c.mu.Lock()
	c.pos = c.buf.Len()
	c.mu.Unlock()
}

// Send types line and a carriage return (what a terminal's Enter key sends).
func (c *Console) Send(line string) error {
	_, err := io.WriteString(c.conn, line+"\r")
	return err
}

// Type sends bytes as typed, without a line end (Tab, arrow keys...).
func (c *Console) Type(s string) error {
	_, err := io.WriteString(c.conn, s)
	return err
}

// Close disconnects.
func (c *Console) Close() error { return c.conn.Close() }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
