package c2s

import (
	"net"
	"sync"
	"testing"
	"time"
)

// deadlineConn accepts every write and records the write deadlines set on it.
type deadlineConn struct {
	net.Conn // nil: other methods are not used
	mu       sync.Mutex
	last     time.Time
	closed   chan struct{}
	once     sync.Once
}

func (d *deadlineConn) Write(b []byte) (int, error) { return len(b), nil }
func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	d.last = t
	d.mu.Unlock()
	return nil
}
func (d *deadlineConn) Close() error { d.once.Do(func() { close(d.closed) }); return nil }
func (d *deadlineConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
}

// A stream the server closes (queue overflow, kick) gets 5 s to write its last
// bytes, even when its writer's own 30 s deadline is due for re-arming: before,
// the writer's next write re-armed it and a client that did not read kept its
// session for 30 s more (TestDeliveryToStuckClient failed on a loaded machine).
func TestCloseDeadlineNotReArmed(t *testing.T) {
	e := start(t, nil)
	dc := &deadlineConn{closed: make(chan struct{})}
	c := newConn(e.srv, dc, false)
	c.wdl = time.Now().Add(writeTimeout - writeSlack - time.Second) // last armed 6 s ago
	s := &session{srv: e.srv, c: c}
	c.sess = s
	before := time.Now()
	s.Close("policy-violation", "too many stanzas queued for this client") // the writer writes the final item
	select {
	case <-dc.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the closing stream's writer did not end")
	}
	dc.mu.Lock()
	last := dc.last
	dc.mu.Unlock()
	if bound := before.Add(5*time.Second + time.Second); last.After(bound) {
		t.Fatalf("the last bytes of a closing stream may take until %v, %v after the close (want at most 5 s)", last.Format(time.StampMilli), last.Sub(before))
	}
}
