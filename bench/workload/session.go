package workload

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"xedge/bench/loadgen"
)

// session wraps a logged-in connection with a reader goroutine that hands
// messages and presences to callbacks and iq answers to waiters.
type session struct {
	c       *loadgen.Conn
	bare    []byte
	wmu     sync.Mutex
	wdl     time.Time // write deadline (under wmu)
	mu      sync.Mutex
	waiting map[string]chan []byte
	onMsg   func(el []byte)
	onPres  func(el []byte)
	onPush  func(el []byte) // roster pushes (iq set), before the ack; set before traffic
	done    chan struct{}
	err     error
}

func newSession(c *loadgen.Conn, onMsg, onPres func([]byte)) *session {
	bare := c.JID
	if i := bytes.IndexByte([]byte(bare), '/'); i >= 0 {
		bare = bare[:i]
	}
	s := &session{c: c, bare: []byte(bare), waiting: map[string]chan []byte{}, onMsg: onMsg, onPres: onPres, done: make(chan struct{})}
	_ = c.SetDeadline(time.Time{})
	go s.read()
	return s
}

func (s *session) read() {
	defer close(s.done)
	for {
		el, err := s.c.Next()
		if err != nil {
			s.err = err
			return
		}
		switch string(loadgen.Name(el)) {
		case "message":
			if s.onMsg != nil {
				s.onMsg(el)
			}
		case "presence":
			if s.onPres != nil {
				s.onPres(el)
			}
		case "iq":
			id := string(loadgen.Attr(el, "id"))
			s.mu.Lock()
			ch := s.waiting[id]
			delete(s.waiting, id)
			s.mu.Unlock()
			if ch != nil {
				ch <- append([]byte(nil), el...)
			} else if string(loadgen.Attr(el, "type")) == "set" || string(loadgen.Attr(el, "type")) == "get" {
				s.mu.Lock()
				push := s.onPush
				s.mu.Unlock()
				if push != nil && string(loadgen.Attr(el, "type")) == "set" {
					push(el)
				}
				// roster pushes and server queries: acknowledge
				_ = s.send([]byte("<iq type='result' id='" + id + "'/>"))
			}
		}
	}
}

// sendTimeout bounds every write of a session.
const sendTimeout = 30 * time.Second

// send writes one stanza. The write deadline is renewed only when less than half
// of sendTimeout is left (every write still has at least 15 s): resetting a timer
// per message was measurable work on the generator in the chat workload. Reads
// have no deadline here; each workload bounds its waits itself.
func (s *session) send(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if now := time.Now(); s.wdl.Sub(now) < sendTimeout/2 {
		s.wdl = now.Add(sendTimeout)
		_ = s.c.SetWriteDeadline(s.wdl)
	}
	return s.c.Send(b)
}

// iq sends an iq (with id) and waits for its answer.
func (s *session) iq(id string, b []byte, timeout time.Duration) ([]byte, error) {
	ch := make(chan []byte, 1)
	s.mu.Lock()
	s.waiting[id] = ch
	s.mu.Unlock()
	if err := s.send(b); err != nil {
		return nil, err
	}
	select {
	case el := <-ch:
		return el, nil
	case <-s.done:
		return nil, fmt.Errorf("connection closed: %w", s.err)
	case <-time.After(timeout):
		return nil, fmt.Errorf("iq %s: no answer in %v", id, timeout)
	}
}

// roster returns jid -> subscription.
func (s *session) roster(timeout time.Duration) (map[string]string, error) {
	id := s.c.NextID()
	el, err := s.iq(id, []byte("<iq type='get' id='"+id+"'><query xmlns='jabber:iq:roster'/></iq>"), timeout)
	if err != nil {
		return nil, err
	}
	if string(loadgen.Attr(el, "type")) != "result" {
		return nil, fmt.Errorf("roster: %.200q", el)
	}
	items := map[string]string{}
	rest := el
	for range 10000 {
		i := bytes.Index(rest, []byte("<item "))
		if i < 0 {
			break
		}
		rest = rest[i:]
		items[loadgen.Unescape(loadgen.Attr(rest, "jid"))] = string(loadgen.Attr(rest, "subscription"))
		rest = rest[5:]
	}
	return items, nil
}

// close ends the session and waits for the reader.
func (s *session) close() {
	_ = s.c.Close()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, loadgen.ErrStreamClosed)
}

// bareOf returns the bare part of a JID attribute value.
func attr(el []byte, name string) []byte { return loadgen.Attr(el, name) }

func bareOf(j []byte) []byte {
	if i := bytes.IndexByte(j, '/'); i >= 0 {
		return j[:i]
	}
	return j
}
