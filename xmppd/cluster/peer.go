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

	// seq numbers the messages: shared by the node's successive peers
	// (Bus.seqs), so a link opened after NodeDown continues the numbering.
	seq *atomic.Uint64

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*Message
	sent    int // queue[:sent] are written on the current connection
	conn    net.Conn
	broken  bool   // the current connection failed
	pingDue bool   // a keepalive is to be written on the current connection
	gone    bool   // takes no more messages
	ended   bool   // down ran
	stalls  uint64 // connections closed for silence
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
	m.seq = p.seq.Add(1)
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

// markGone stops the peer taking messages (down fails what it holds).
func (p *peer) markGone() {
	p.mu.Lock()
	p.gone = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// down ends the peer: every message still queued fails with err.
func (p *peer) down(err error) { p.downHeld(err, nil) }

// downHeld is down, except that a queued message (not a call) for which held
// returns true does not fail (Bus.SetHeld); it returns how many were held.
func (p *peer) downHeld(err error, held func(string, *Message) bool) int {
	p.mu.Lock()
	if p.ended {
		p.mu.Unlock()
		return 0
	}
	p.ended, p.gone = true, true
	q := p.queue
	p.queue = nil
	c := p.conn
	p.cond.Broadcast()
	p.mu.Unlock()
	close(p.done)
	if c != nil {
		closeConn(c)
	}
	n := 0
	for _, m := range q {
		if held != nil && m.reqID == 0 && held(p.node, m) {
			n++
			continue
		}
		p.b.failed.Add(1)
		if m.fail != nil {
			m.fail(m, err)
		}
	}
	return n
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
		l, err := p.connect()
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
		p.serveConn(l)
	}
}

// link is one connection of a peer.
type link struct {
	c  net.Conn
	r  *bufio.Reader
	hb bool          // the receiver sends keepalives: its silence means a stall
	in atomic.Uint64 // frames read from the receiver
}

func (p *peer) connect() (*link, error) {
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
	if err := writeHello(c, p.b.hello()); err != nil {
		_ = c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(c, 4096)
	h, err := readHello(r)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	l := &link{c: c, r: r, hb: h.HB > 0 && p.b.cfg.Heartbeat > 0}
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		_ = c.Close()
		return nil, ErrPeerGone
	}
	p.conn, p.broken, p.sent, p.pingDue = c, false, 0, false
	p.mu.Unlock()
	go p.readAcks(l)
	return l, nil
}

// readAcks reads acknowledgements, call replies and keepalives from the peer.
func (p *peer) readAcks(l *link) {
	var buf []byte
	for {
		typ, b, err := readFrame(l.r, buf)
		buf = b
		if err != nil {
			break
		}
		l.in.Add(1)
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
	p.breakConn(l.c)
}

// closeConn closes c without waiting: a TLS connection's close first writes
// an alert, which on a link that drops packets may wait for a full send
// buffer to drain (up to 5 s), and the redial must not.
func closeConn(c net.Conn) { go c.Close() }

// breakConn closes c and, if it is the current connection, makes serveConn
// end it (run then redials at once).
func (p *peer) breakConn(c net.Conn) {
	closeConn(c)
	p.mu.Lock()
	if p.conn == c {
		p.broken = true
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// heartbeat has a keepalive written on l every Heartbeat and, if the
// receiver sends keepalives too, declares l stalled when nothing came in on
// it for HeartbeatTimeout: a connection whose packets are dropped (a cut
// cable, a firewall or conntrack state lost, a partition that healed) would
// otherwise hold the queue until TCP gives up, many minutes later. The
// unacknowledged messages are written again on the next connection.
func (p *peer) heartbeat(l *link, stop <-chan struct{}) {
	cfg := p.b.cfg
	t := time.NewTicker(cfg.Heartbeat)
	defer t.Stop()
	last, since := l.in.Load(), time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			if p.conn == l.c {
				p.pingDue = true
				p.cond.Signal()
			}
			p.mu.Unlock()
			if !l.hb {
				continue
			}
			if n := l.in.Load(); n != last {
				last, since = n, now
				continue
			}
			if silent := now.Sub(since); silent >= cfg.HeartbeatTimeout {
				p.mu.Lock()
				p.stalls++
				queued := len(p.queue)
				p.mu.Unlock()
				p.b.stalls.Add(1)
				p.b.log.Warn("cluster peer link stalled: nothing received; closing it and redialing",
					"peer", p.node, "silent", silent.Round(time.Millisecond), "unacknowledged", queued)
				p.breakConn(l.c)
				return
			}
		}
	}
}

// serveConn writes queued messages and keepalives on l until it breaks or
// the peer is down.
func (p *peer) serveConn(l *link) {
	c := l.c
	stop := make(chan struct{})
	defer close(stop)
	if p.b.cfg.Heartbeat > 0 {
		go p.heartbeat(l, stop)
	}
	w := bufio.NewWriterSize(c, 64<<10)
	var buf []byte
	for {
		p.mu.Lock()
		for !p.gone && !p.broken && p.sent == len(p.queue) && !p.pingDue {
			p.cond.Wait()
		}
		if p.gone || p.broken {
			if p.conn == c {
				p.conn = nil
			}
			p.mu.Unlock()
			closeConn(c)
			return
		}
		batch := append([]*Message(nil), p.queue[p.sent:]...)
		p.sent = len(p.queue)
		ping := p.pingDue
		p.pingDue = false
		p.mu.Unlock()
		var err error
		for _, m := range batch {
			buf = appendMsg(buf[:0], m)
			if _, err = w.Write(buf); err != nil {
				break
			}
		}
		if ping && err == nil {
			buf = appendFrame(buf[:0], frKeepalive, func(b []byte) []byte { return b })
			_, err = w.Write(buf)
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			p.breakConn(c)
		}
	}
}

// --- receiving side ------------------------------------------------------

// inState is what was delivered from one sending node's incarnation.
type inState struct {
	mu   sync.Mutex
	inc  uint64
	last uint64
	// The reply frames of the last calls handled, by sequence number: a call
	// written again on a new link after its reply was lost gets it again.
	replies    map[uint64][]byte
	replySeqs  []uint64
	replyBytes int
}

// barrierRetry is the pause between two attempts of a failed barrier.
const barrierRetry = 200 * time.Millisecond

// keptReplies and keptReplyBytes bound inState.replies.
const (
	keptReplies    = 256
	keptReplyBytes = 4 << 20
)

func (st *inState) keepReply(seq uint64, frame []byte) {
	if st.replies == nil {
		st.replies = map[uint64][]byte{}
	}
	for len(st.replySeqs) > 0 && (len(st.replySeqs) >= keptReplies || st.replyBytes+len(frame) > keptReplyBytes) {
		st.replyBytes -= len(st.replies[st.replySeqs[0]])
		delete(st.replies, st.replySeqs[0])
		st.replySeqs = st.replySeqs[1:]
	}
	st.replies[seq] = append([]byte(nil), frame...)
	st.replyBytes += len(frame)
	st.replySeqs = append(st.replySeqs, seq)
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
	if err := writeHello(c, b.hello()); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	// The sender has one connection to this node at a time: one it opened
	// earlier is dead to it (stalled, or dropped when it declared this node
	// gone) and must not deliver late what the sender has rerouted since.
	for old, node := range b.inConns {
		if node == h.Node {
			closeConn(old)
		}
	}
	b.inConns[c] = h.Node
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
	var frames atomic.Uint64   // frames read
	var busy atomic.Bool       // a handler runs (the reader is not waiting for input)
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
				// Retried until it holds: acknowledging a held message after a
				// failed barrier told the sender a stanza was safe that only this
				// node had (a node declared lost by its peers, whose copies of
				// its sessions then went stale, lost every stanza so
				// acknowledged when it died). Unacknowledged, the sender keeps
				// it and routes it again if it declares this node gone.
				for fn != nil {
					ctx, cancel := context.WithTimeout(hctx, 5*time.Second)
					err := fn(ctx)
					cancel()
					if hctx.Err() != nil {
						return // stream or bus closed: nothing more is acknowledged
					}
					if err == nil {
						if barrierFailing {
							b.log.Info("bus barrier holds again; acknowledging", "peer", h.Node)
						}
						barrierFailing = false
						break
					}
					if !barrierFailing {
						b.log.Warn("bus barrier failed; acknowledgements wait until it holds", "peer", h.Node, "err", err)
					}
					barrierFailing = true
					select {
					case <-hctx.Done():
						return
					case <-time.After(barrierRetry):
					}
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
	if h.HB > 0 && b.cfg.Heartbeat > 0 {
		// Keepalives to the sender (which takes their absence for a stall),
		// written whatever the handlers do; and the stream is closed when the
		// sender, which writes keepalives, went silent while nothing here
		// kept the reader from reading.
		kaDone := make(chan struct{})
		defer func() { <-kaDone }()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			defer close(kaDone)
			t := time.NewTicker(b.cfg.Heartbeat)
			defer t.Stop()
			ka := appendFrame(nil, frKeepalive, func(x []byte) []byte { return x })
			last, since := frames.Load(), time.Now()
			for {
				select {
				case <-stop:
					return
				case now := <-t.C:
					wmu.Lock()
					_, _ = w.Write(ka)
					_ = c.SetWriteDeadline(now.Add(5 * time.Second))
					err := w.Flush()
					wmu.Unlock()
					if err != nil {
						closeConn(c)
						return
					}
					if n := frames.Load(); n != last || busy.Load() {
						last, since = n, now
						continue
					}
					if silent := now.Sub(since); silent >= b.cfg.HeartbeatTimeout {
						b.stalls.Add(1)
						b.log.Warn("cluster peer stream stalled: nothing received; closing it", "peer", h.Node,
							"silent", silent.Round(time.Millisecond))
						closeConn(c)
						return
					}
				}
			}
		}()
	}
	var buf, out []byte
	for {
		typ, fb, err := readFrame(r, buf)
		buf = fb
		if err != nil {
			return
		}
		frames.Add(1)
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
		busy.Store(true)
		st.mu.Lock()
		if st.inc != h.Inc {
			st.inc, st.last = h.Inc, 0
			st.replies, st.replySeqs, st.replyBytes = nil, nil, 0
		}
		dup := m.seq <= st.last
		if dup && m.reqID == 0 {
			// Handled before on a stream that broke, perhaps before its
			// barrier ran: run it before acknowledging again.
			heldUpTo.Store(m.seq)
		}
		if dup && m.reqID != 0 {
			// A call handled before whose reply may have been lost with the
			// stream: the caller still waits for it (the handler does not run
			// twice).
			if rep := st.replies[m.seq]; rep != nil {
				wmu.Lock()
				_, _ = w.Write(rep)
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				ferr := w.Flush()
				wmu.Unlock()
				if ferr != nil {
					st.mu.Unlock()
					return
				}
			}
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
				st.keepReply(m.seq, out)
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
		busy.Store(false)
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
