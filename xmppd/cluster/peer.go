package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"xedge/internal/backoff"
)

// peer is the sending side of the link to one node: a queue of messages not
// yet acknowledged, in sequence order, written on one connection and written
// again after a reconnect (the receiver skips what it already delivered).
type peer struct {
	b          *Bus
	node, addr string

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*Message
	sent    int // queue[:sent] are written on the current connection
	nextSeq uint64
	conn    net.Conn
	broken  bool // the current connection failed
	gone    bool
	done    chan struct{}
}

func (p *peer) enqueue(m *Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return ErrPeerGone
	}
	if len(p.queue) >= p.b.cfg.QueueMax {
		return ErrQueueFull
	}
	p.nextSeq++
	m.seq = p.nextSeq
	p.queue = append(p.queue, m)
	p.cond.Signal()
	return nil
}

func (p *peer) acked(seq uint64) {
	p.mu.Lock()
	n := 0
	for n < len(p.queue) && p.queue[n].seq <= seq {
		p.queue[n] = nil
		n++
	}
	p.queue = p.queue[n:]
	p.sent = max(0, p.sent-n)
	p.mu.Unlock()
}

// down ends the peer: every message still queued fails with err.
func (p *peer) down(err error) {
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		return
	}
	p.gone = true
	q := p.queue
	p.queue = nil
	c := p.conn
	p.cond.Broadcast()
	p.mu.Unlock()
	close(p.done)
	if c != nil {
		_ = c.Close()
	}
	for _, m := range q {
		p.b.failed.Add(1)
		if m.fail != nil {
			m.fail(m, err)
		}
	}
}

func (p *peer) isGone() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone
}

// run connects, writes, reconnects until the peer is down or the bus stops.
func (p *peer) run() {
	defer p.b.wg.Done()
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	failing := false
	for !p.isGone() {
		c, err := p.connect()
		if err != nil {
			if !failing {
				p.b.log.Warn("cannot reach cluster peer (retrying)", "peer", p.node, "err", err)
				failing = true
			}
			select {
			case <-time.After(bo.Next()):
			case <-p.done:
				return
			case <-p.b.ctx.Done():
				return
			}
			continue
		}
		if failing {
			p.b.log.Info("cluster peer reachable again", "peer", p.node)
		}
		failing = false
		bo.Reset()
		p.serveConn(c)
	}
}

func (p *peer) connect() (net.Conn, error) {
	p.mu.Lock()
	if addr, ok := p.b.cfg.Resolve(p.node); ok {
		p.addr = addr
	}
	addr := p.addr
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.b.ctx, 2*time.Second)
	defer cancel()
	c, err := p.b.cfg.Transport.DialStream(ctx, addr, StreamKind)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := writeHello(c, hello{Node: p.b.cfg.Node, Inc: p.b.cfg.Incarnation}); err != nil {
		_ = c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(c, 4096)
	if _, err := readHello(r); err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		_ = c.Close()
		return nil, ErrPeerGone
	}
	p.conn, p.broken, p.sent = c, false, 0
	p.mu.Unlock()
	go p.readAcks(c, r)
	return c, nil
}

// readAcks reads acknowledgements and call replies from the peer.
func (p *peer) readAcks(c net.Conn, r *bufio.Reader) {
	var buf []byte
	for {
		typ, b, err := readFrame(r, buf)
		buf = b
		if err != nil {
			break
		}
		rd := &reader{b: b}
		switch typ {
		case frAck:
			seq := rd.uvarint()
			if !rd.err {
				p.acked(seq)
			}
		case frReply:
			id := rd.uvarint()
			errText := rd.str()
			body := append([]byte(nil), rd.bytes()...)
			if !rd.err {
				p.b.reply(id, body, errText)
			}
		}
	}
	_ = c.Close()
	p.mu.Lock()
	if p.conn == c {
		p.broken = true
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// serveConn writes queued messages on c until it breaks or the peer is down.
func (p *peer) serveConn(c net.Conn) {
	w := bufio.NewWriterSize(c, 64<<10)
	var buf []byte
	for {
		p.mu.Lock()
		for !p.gone && !p.broken && p.sent == len(p.queue) {
			p.cond.Wait()
		}
		if p.gone || p.broken {
			if p.conn == c {
				p.conn = nil
			}
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		batch := append([]*Message(nil), p.queue[p.sent:]...)
		p.sent = len(p.queue)
		p.mu.Unlock()
		for _, m := range batch {
			buf = appendMsg(buf[:0], m)
			if _, err := w.Write(buf); err != nil {
				break
			}
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := w.Flush(); err != nil {
			p.mu.Lock()
			p.broken = true
			p.mu.Unlock()
		}
	}
}

// --- receiving side ------------------------------------------------------

// inState is what was delivered from one sending node's incarnation.
type inState struct {
	mu   sync.Mutex
	inc  uint64
	last uint64
}

func (b *Bus) sender(node string) *inState {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.senders[node]
	if st == nil {
		st = &inState{}
		b.senders[node] = st
	}
	return st
}

// serve is the inbound side of a peer's bus stream.
func (b *Bus) serve(c net.Conn) {
	r := bufio.NewReaderSize(c, 64<<10)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	h, err := readHello(r)
	if err != nil {
		return
	}
	if err := writeHello(c, hello{Node: b.cfg.Node, Inc: b.cfg.Incarnation}); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	b.inConns[c] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.inConns, c)
		b.mu.Unlock()
	}()
	from := Peer{Node: h.Node, Incarnation: h.Inc}
	st := b.sender(h.Node)
	w := bufio.NewWriterSize(c, 16<<10)
	var wmu sync.Mutex // w: replies (here) and acknowledgements (acker)
	var handled atomic.Uint64
	var heldUpTo atomic.Uint64 // the last handled message that held its ack
	hold := &ackHold{}
	hctx, hcancel := context.WithCancel(context.WithValue(b.ctx, holdKey{}, hold))
	defer hcancel()
	ackKick := make(chan struct{}, 1)
	ackDone := make(chan struct{})
	// Acknowledgements are cumulative and coalesced (at most one per 2 ms):
	// they only bound the sender's queue and settle what a node's death would
	// re-route, so they need not be per message. A message whose handler
	// called HoldAck is acknowledged only after the barrier ran (one barrier
	// for all that was handled before it started).
	go func() {
		defer close(ackDone)
		var out []byte
		var sent uint64
		barrierFailing := false
		for range ackKick {
			seq := handled.Load()
			if seq == sent {
				continue
			}
			if heldUpTo.Load() > sent {
				b.mu.Lock()
				fn := b.barrier
				b.mu.Unlock()
				if fn != nil {
					ctx, cancel := context.WithTimeout(hctx, 5*time.Second)
					err := fn(ctx)
					cancel()
					if hctx.Err() != nil {
						return // stream or bus closed: nothing more is acknowledged
					}
					if err != nil && !barrierFailing {
						b.log.Warn("bus barrier failed; acknowledging anyway", "peer", h.Node, "err", err)
					}
					barrierFailing = err != nil
				}
			}
			out = appendFrame(out[:0], frAck, func(x []byte) []byte { return binary.AppendUvarint(x, seq) })
			wmu.Lock()
			_, _ = w.Write(out)
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			err := w.Flush()
			wmu.Unlock()
			if err != nil {
				_ = c.Close()
			}
			sent = seq
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() {
		hcancel() // a barrier in progress ends: the stream is gone
		close(ackKick)
		<-ackDone
	}()
	var buf, out []byte
	for {
		typ, fb, err := readFrame(r, buf)
		buf = fb
		if err != nil {
			return
		}
		if typ != frMsg {
			continue
		}
		rd := &reader{b: fb}
		m := &Message{seq: rd.uvarint(), reqID: rd.uvarint()}
		m.Kind, m.To, m.ID = rd.str(), rd.str(), rd.str()
		m.Body = append([]byte(nil), rd.bytes()...)
		if rd.err {
			b.log.Warn("malformed bus message; closing the stream", "peer", h.Node)
			return
		}
		st.mu.Lock()
		if st.inc != h.Inc {
			st.inc, st.last = h.Inc, 0
		}
		dup := m.seq <= st.last
		if dup && m.reqID == 0 {
			// Handled before on a stream that broke, perhaps before its
			// barrier ran: run it before acknowledging again.
			heldUpTo.Store(m.seq)
		}
		if !dup {
			st.last = m.seq
			b.recv.Add(1)
			b.mu.Lock()
			hd := b.handlers[m.Kind]
			b.mu.Unlock()
			var reply []byte
			var herr error
			if hd == nil {
				herr = &unknownKind{m.Kind}
			} else {
				reply, herr = safeHandle(hctx, b, hd, from, m)
				if hold.held.Swap(false) && m.reqID == 0 {
					heldUpTo.Store(m.seq)
				}
			}
			if m.reqID != 0 {
				errText := ""
				if herr != nil {
					errText = herr.Error()
					if errText == "" {
						errText = "error"
					}
				}
				out = appendFrame(out[:0], frReply, func(x []byte) []byte {
					x = binary.AppendUvarint(x, m.reqID)
					x = appendString(x, errText)
					return appendString(x, string(reply))
				})
				wmu.Lock()
				_, _ = w.Write(out)
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				ferr := w.Flush()
				wmu.Unlock()
				if ferr != nil {
					st.mu.Unlock()
					return
				}
			}
		}
		st.mu.Unlock()
		handled.Store(m.seq)
		if r.Buffered() == 0 {
			select {
			case ackKick <- struct{}{}:
			default:
			}
		}
	}
}

type unknownKind struct{ kind string }

func (e *unknownKind) Error() string { return "cluster: no handler for bus message kind " + e.kind }

func safeHandle(ctx context.Context, b *Bus, h Handler, from Peer, m *Message) (reply []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			b.log.Error("bus handler panicked", "kind", m.Kind, "peer", from.Node, "panic", v)
			err = &unknownKind{m.Kind + " (handler failed)"}
		}
	}()
	return h(ctx, from, m)
}

func (b *Bus) reply(id uint64, body []byte, errText string) {
	b.mu.Lock()
	ch := b.calls[id]
	b.mu.Unlock()
	if ch == nil {
		return
	}
	var err error
	if errText != "" {
		err = &remoteError{errText}
	}
	select {
	case ch <- callResult{body: body, err: err}:
	default:
	}
}

type remoteError struct{ text string }

func (e *remoteError) Error() string { return "cluster: remote: " + e.text }
