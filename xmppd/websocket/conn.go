package websocket

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// wsConn adapts a WebSocket carrying RFC 7395 framing to a net.Conn carrying
// the plain stream framing. A goroutine reads messages into a channel, so a
// read deadline only stops waiting (coder/websocket closes the connection when
// a read's context ends, which a deadline must not do).
type wsConn struct {
	ws            *websocket.Conn
	local, remote net.Addr
	maxMsg        int64

	in      chan []byte
	readErr error // set before in is closed
	pending []byte

	rmu      sync.Mutex
	rdl      time.Time
	deadline chan struct{} // replaced when the read deadline changes

	wmu   sync.Mutex
	wdl   time.Time
	split *splitter

	closeOnce sync.Once
	closed    chan struct{} // closed by Close: Read returns at once
	ctx       context.Context
	cancel    context.CancelFunc
}

func newConn(ws *websocket.Conn, local, remote net.Addr, maxMsg int64) *wsConn {
	c := &wsConn{ws: ws, local: local, remote: remote, maxMsg: maxMsg, in: make(chan []byte, 4),
		deadline: make(chan struct{}), split: newSplitter(), closed: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	ws.SetReadLimit(maxMsg)
	go c.readLoop()
	return c
}

func (c *wsConn) readLoop() {
	defer close(c.in)
	for {
		typ, msg, err := c.ws.Read(c.ctx)
		if err != nil {
			if websocket.CloseStatus(err) != -1 {
				err = io.EOF
			}
			c.readErr = err
			return
		}
		if typ != websocket.MessageText {
			c.readErr = errors.New("websocket: binary message (RFC 7395 uses text messages)")
			return
		}
		b, err := inbound(msg)
		if err != nil {
			c.readErr = err
			return
		}
		select {
		case c.in <- b:
		case <-c.ctx.Done():
			c.readErr = net.ErrClosed
			return
		}
	}
}

func (c *wsConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	c.rmu.Lock()
	dl, dch := c.rdl, c.deadline
	c.rmu.Unlock()
	var timer <-chan time.Time
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	for {
		select {
		case b, ok := <-c.in:
			if !ok {
				if c.readErr == nil {
					return 0, io.EOF
				}
				return 0, c.readErr
			}
			n := copy(p, b)
			c.pending = b[n:]
			return n, nil
		case <-timer:
			return 0, os.ErrDeadlineExceeded
		case <-dch:
			c.rmu.Lock()
			dl, dch = c.rdl, c.deadline
			c.rmu.Unlock()
			if !dl.IsZero() && !time.Now().Before(dl) {
				return 0, os.ErrDeadlineExceeded
			}
			// a later or no deadline: keep waiting under it
			if dl.IsZero() {
				timer = nil
			} else {
				t := time.NewTimer(time.Until(dl))
				defer t.Stop()
				timer = t.C
			}
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	msgs, err := c.split.write(p)
	if err != nil {
		return 0, err
	}
	ctx := c.ctx
	if !c.wdl.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, c.wdl)
		defer cancel()
	}
	for _, m := range msgs {
		if err := c.ws.Write(ctx, websocket.MessageText, m); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return 0, os.ErrDeadlineExceeded
			}
			return 0, err
		}
	}
	return len(p), nil
}

// Close ends the WebSocket with a normal closure (the <close/> went out
// before, when c2s wrote </stream:stream>).
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		go func() {
			// Close waits up to 5 s for the peer's close frame: not in the caller.
			c.ws.Close(websocket.StatusNormalClosure, "")
			c.cancel()
		}()
	})
	return nil
}

func (c *wsConn) LocalAddr() net.Addr  { return c.local }
func (c *wsConn) RemoteAddr() net.Addr { return c.remote }

func (c *wsConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *wsConn) SetReadDeadline(t time.Time) error {
	c.rmu.Lock()
	c.rdl = t
	close(c.deadline)
	c.deadline = make(chan struct{})
	c.rmu.Unlock()
	return nil
}

func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	c.wdl = t
	c.wmu.Unlock()
	return nil
}
