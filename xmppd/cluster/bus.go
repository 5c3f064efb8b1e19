// Package cluster owns xmppd's inter-node bus: an authenticated, encrypted,
// per-peer ordered and acknowledged message transport between the nodes of a
// cluster, carried over the cluster port (a stream kind of its own on the
// replicated store's TLS mux, so only holders of the cluster key connect), and
// the hybrid logical clock that orders session binds cluster-wide.
//
// It knows nothing of XMPP routing: the router hands it opaque messages with
// a kind, and registers handlers for the kinds it receives. It must not import
// the router, c2s, server or any module.
package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// StreamKind is the bus's stream kind on the cluster port's TLS mux.
const StreamKind = byte('B')

// Transport opens and accepts authenticated streams on the cluster port
// (storage/replicated.Store implements it).
type Transport interface {
	HandleStream(kind byte, fn func(net.Conn)) error
	DialStream(ctx context.Context, addr string, kind byte) (net.Conn, error)
}

// Message is one bus message. Kind names the handler on the receiving node;
// To, ID and Body are the sender's and handler's to define (the router uses
// To = target full JID, ID = target session ID, Body = the stanza's XML).
type Message struct {
	Kind string
	To   string
	ID   string
	Body []byte

	seq   uint64
	reqID uint64
	fail  func(*Message, error)
}

// Peer identifies the sending node of a received message.
type Peer struct {
	Node        string
	Incarnation uint64
}

// Handler handles a received message. Messages from one peer are handled one
// at a time in the order they were sent, so a handler must not block for
// long. For a message sent with Call, reply and err go back to the caller; for
// one sent with Send they are dropped.
type Handler func(ctx context.Context, from Peer, m *Message) (reply []byte, err error)

// Errors handed to a Send's onFail (and returned by Call).
var (
	// ErrPeerGone: the peer was declared dead (NodeDown) or the bus stopped
	// before it acknowledged the message.
	ErrPeerGone = errors.New("cluster: peer gone before acknowledging")
	// ErrQueueFull: the peer's queue is at QueueMax (a slow or unreachable peer).
	ErrQueueFull = errors.New("cluster: peer queue full")
	// ErrNoPeer: the node is unknown (Resolve found no address).
	ErrNoPeer = errors.New("cluster: unknown node")
)

// Config configures a Bus.
type Config struct {
	Node        string
	Incarnation uint64
	Transport   Transport
	// Resolve returns a node's cluster address (false: unknown node).
	Resolve func(node string) (addr string, ok bool)
	// QueueMax bounds the messages queued or unacknowledged per peer
	// (default 65536).
	QueueMax int
	// Heartbeat is the interval of the keepalives each end of a peer link
	// sends (default 200 ms; negative: none, as before the heartbeats).
	Heartbeat time.Duration
	// HeartbeatTimeout is how long a link may go without inbound traffic
	// (messages, acknowledgements or keepalives) before it is declared
	// stalled: closed, and redialed at once by the sending side, which
	// writes again everything not yet acknowledged (default 1 s).
	HeartbeatTimeout time.Duration
	Logger           *slog.Logger
}

// Bus is the inter-node bus. New -> Handle... -> Start -> Stop.
type Bus struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	handlers map[string]Handler
	peers    map[string]*peer
	seqs     map[string]*atomic.Uint64 // per node: the last sequence number given, across its peers
	senders  map[string]*inState       // per sending node: what was delivered
	calls    map[uint64]chan callResult
	stopped  bool
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	reqIDs   atomic.Uint64
	inConns  map[net.Conn]string // inbound streams and their sending node
	barrier  func(ctx context.Context) error
	held     func(node string, m *Message) bool

	sent, recv, failed atomic.Uint64
	stalls             atomic.Uint64 // links declared stalled (either side)
}

type callResult struct {
	body []byte
	err  error
}

// New returns a bus; register handlers before Start.
func New(cfg Config) *Bus {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QueueMax <= 0 {
		cfg.QueueMax = 65536
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 200 * time.Millisecond
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = time.Second
	}
	if cfg.Heartbeat > 0 && cfg.HeartbeatTimeout < 2*cfg.Heartbeat {
		cfg.HeartbeatTimeout = 2 * cfg.Heartbeat
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Bus{cfg: cfg, log: cfg.Logger.With("component", "bus"),
		handlers: map[string]Handler{}, peers: map[string]*peer{}, seqs: map[string]*atomic.Uint64{},
		senders: map[string]*inState{}, calls: map[uint64]chan callResult{}, inConns: map[net.Conn]string{},
		ctx: ctx, cancel: cancel}
}

// Node is this node's name.
func (b *Bus) Node() string { return b.cfg.Node }

// Handle registers h for messages of kind (the later registration wins).
func (b *Bus) Handle(kind string, h Handler) {
	b.mu.Lock()
	b.handlers[kind] = h
	b.mu.Unlock()
}

// SetBarrier sets the function run before acknowledging messages whose
// handler called HoldAck: the acknowledgement of everything handled up to
// then waits until it returns (one call covers every message handled before
// it started, so it runs at most once per acknowledgement batch). The router
// uses it to acknowledge a stanza forwarded to a resumable session only once
// the resumption state holding it is on another node. A barrier that fails is
// logged and retried: the messages are acknowledged only once it holds (the
// sender keeps them meanwhile, and routes them again if it declares this
// node gone).
func (b *Bus) SetBarrier(fn func(ctx context.Context) error) {
	b.mu.Lock()
	b.barrier = fn
	b.mu.Unlock()
}

// SetHeld sets the function NodeDown asks, for each message (not a Call) the
// node declared gone had not acknowledged, whether it is safe all the same:
// held on this node where whoever takes over from the gone node finds it (a
// stanza in this node's copy of the recipient's XEP-0198 session, which a
// resumption anywhere merges, or whose expiry reroutes). Such a message's
// onFail does not run; the others fail as before. Routing it again as well
// delivered it twice or, with the recipient's offline storage full, bounced
// to its sender a message that was delivered.
func (b *Bus) SetHeld(fn func(node string, m *Message) bool) {
	b.mu.Lock()
	b.held = fn
	b.mu.Unlock()
}

type holdKey struct{}

// ackHold is a receiving stream's "run the barrier before acknowledging" flag.
type ackHold struct{ held atomic.Bool }

// HoldAck, called by a handler with the context it was given, makes the bus
// acknowledge the message only after the barrier (SetBarrier) ran. It does
// nothing for a message sent with Call or without a barrier.
func HoldAck(ctx context.Context) {
	if h, ok := ctx.Value(holdKey{}).(*ackHold); ok {
		h.held.Store(true)
	}
}

// Start accepts bus streams from peers.
func (b *Bus) Start(context.Context) error {
	if b.cfg.Transport == nil {
		return errors.New("cluster: bus without transport")
	}
	return b.cfg.Transport.HandleStream(StreamKind, b.serve)
}

// Stop waits up to a second (or ctx) for connected peers to acknowledge what
// is queued for them (the unavailable presences of a clean shutdown), then
// closes every connection; unacknowledged messages fail with ErrPeerGone.
func (b *Bus) Stop(ctx context.Context) error {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil && b.pending() {
		time.Sleep(10 * time.Millisecond)
	}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return nil
	}
	b.stopped = true
	peers := make([]*peer, 0, len(b.peers))
	for _, p := range b.peers {
		peers = append(peers, p)
	}
	for c := range b.inConns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.cancel()
	for _, p := range peers {
		p.down(ErrPeerGone)
	}
	b.wg.Wait()
	return nil
}

// Send queues m for node and returns at once. Messages to one node are
// delivered in order, each at most once per receiver incarnation. onFail
// (may be nil) is called exactly once, from another goroutine, if m is not
// acknowledged: the node is declared down (NodeDown; unless SetHeld's
// function holds it), its queue is full, or it is unknown. m must not be
// changed after Send.
func (b *Bus) Send(node string, m *Message, onFail func(*Message, error)) {
	m.fail = onFail
	p, err := b.peer(node)
	if err == nil {
		err = p.enqueue(m)
	}
	if err != nil {
		b.failed.Add(1)
		if onFail != nil {
			go onFail(m, err)
		}
		return
	}
	b.sent.Add(1)
}

// Call sends m to node and waits for the handler's reply (or ctx).
func (b *Bus) Call(ctx context.Context, node string, m *Message) ([]byte, error) {
	id := b.reqIDs.Add(1)
	ch := make(chan callResult, 1)
	b.mu.Lock()
	b.calls[id] = ch
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.calls, id)
		b.mu.Unlock()
	}()
	m.reqID = id
	b.Send(node, m, func(_ *Message, err error) {
		select {
		case ch <- callResult{err: err}:
		default:
		}
	})
	select {
	case r := <-ch:
		return r.body, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("cluster: call %s on %s: %w", m.Kind, node, ctx.Err())
	}
}

// pending reports whether a connected peer has unacknowledged messages.
func (b *Bus) pending() bool {
	for _, ps := range b.Stats() {
		if ps.Connected && ps.Queued > 0 {
			return true
		}
	}
	return false
}

// NodeDown declares node dead: every message queued or unacknowledged for it
// fails with ErrPeerGone (its onFail runs; SetHeld), and the connection is dropped.
// Later Sends to the node start on a new link (a restarted node, or one
// declared dead by mistake): their sequence numbers continue those of the
// old link, so the receiver — the same process if the loss was false —
// handles them instead of taking them for duplicates.
func (b *Bus) NodeDown(node string) {
	b.mu.Lock()
	p := b.peers[node]
	delete(b.peers, node)
	if p != nil {
		// Gone before a new peer can exist: no message of the old link is
		// numbered after one of the new.
		p.markGone()
	}
	held := b.held
	b.mu.Unlock()
	if p != nil {
		if n := p.downHeld(ErrPeerGone, held); n > 0 {
			b.log.Info("messages the gone node had not acknowledged are held here (in copies of their sessions): not failed", "peer", node, "held", n)
		}
	}
}

// PeerStats describes the link to one peer.
type PeerStats struct {
	Node      string `json:"node"`
	Addr      string `json:"addr"`
	Connected bool   `json:"connected"`
	Queued    int    `json:"queued"`
	// Stalls counts the links to the peer closed for silence (no inbound
	// traffic for HeartbeatTimeout) and redialed.
	Stalls uint64 `json:"stalls,omitempty"`
}

// Stats describes the links to peers.
func (b *Bus) Stats() []PeerStats {
	b.mu.Lock()
	ps := make([]*peer, 0, len(b.peers))
	for _, p := range b.peers {
		ps = append(ps, p)
	}
	b.mu.Unlock()
	out := make([]PeerStats, 0, len(ps))
	for _, p := range ps {
		p.mu.Lock()
		out = append(out, PeerStats{Node: p.node, Addr: p.addr, Connected: p.conn != nil, Queued: len(p.queue), Stalls: p.stalls})
		p.mu.Unlock()
	}
	return out
}

// Counters returns messages sent, received and failed since start.
func (b *Bus) Counters() (sent, recv, failed uint64) {
	return b.sent.Load(), b.recv.Load(), b.failed.Load()
}

// Stalls counts the links (outbound and inbound) closed since start because
// no traffic came in on them for HeartbeatTimeout.
func (b *Bus) Stalls() uint64 { return b.stalls.Load() }

func (b *Bus) peer(node string) (*peer, error) {
	if node == b.cfg.Node {
		return nil, fmt.Errorf("cluster: send to self (%s)", node)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil, ErrPeerGone
	}
	if p := b.peers[node]; p != nil {
		return p, nil
	}
	if b.cfg.Resolve == nil {
		return nil, ErrNoPeer
	}
	addr, ok := b.cfg.Resolve(node)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoPeer, node)
	}
	seq := b.seqs[node]
	if seq == nil {
		seq = new(atomic.Uint64)
		b.seqs[node] = seq
	}
	p := &peer{b: b, node: node, addr: addr, seq: seq, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	b.peers[node] = p
	b.wg.Add(1)
	go p.run()
	return p, nil
}

// --- framing -------------------------------------------------------------

const (
	frHello = 'H'
	frMsg   = 'M'
	frAck   = 'A'
	frReply = 'P'
	// frKeepalive is a heartbeat, sent both ways every Config.Heartbeat by an
	// end whose hello announced heartbeats (an older node ignores it).
	frKeepalive = 'K'

	maxFrame = 64 << 20
)

type hello struct {
	Node string `json:"node"`
	Inc  uint64 `json:"inc"`
	// HB is the sender's keepalive interval in milliseconds (0: an older
	// node that sends none, so its silence means nothing).
	HB int64 `json:"hb,omitempty"`
}

// hello is this bus's hello.
func (b *Bus) hello() hello {
	h := hello{Node: b.cfg.Node, Inc: b.cfg.Incarnation}
	if b.cfg.Heartbeat > 0 {
		h.HB = max(1, b.cfg.Heartbeat.Milliseconds())
	}
	return h
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFrame(buf []byte, typ byte, payload func([]byte) []byte) []byte {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, typ)
	buf = payload(buf)
	binary.BigEndian.PutUint32(buf[start:], uint32(len(buf)-start-4))
	return buf
}

func appendMsg(buf []byte, m *Message) []byte {
	return appendFrame(buf, frMsg, func(b []byte) []byte {
		b = binary.AppendUvarint(b, m.seq)
		b = binary.AppendUvarint(b, m.reqID)
		b = appendString(b, m.Kind)
		b = appendString(b, m.To)
		b = appendString(b, m.ID)
		b = binary.AppendUvarint(b, uint64(len(m.Body)))
		return append(b, m.Body...)
	})
}

type reader struct {
	b   []byte
	err bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err || n > uint64(len(r.b)) {
		r.err = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string { return string(r.bytes()) }

func readFrame(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 1 || n > maxFrame {
		return 0, buf, fmt.Errorf("cluster: bad frame length %d", n)
	}
	if cap(buf) < int(n-1) {
		buf = make([]byte, n-1)
	}
	buf = buf[:n-1]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, buf, err
	}
	return hdr[4], buf, nil
}

func writeHello(w io.Writer, h hello) error {
	j, _ := json.Marshal(h)
	_, err := w.Write(appendFrame(nil, frHello, func(b []byte) []byte { return append(b, j...) }))
	return err
}

func readHello(r *bufio.Reader) (hello, error) {
	var h hello
	typ, b, err := readFrame(r, nil)
	if err != nil {
		return h, err
	}
	if typ != frHello {
		return h, errors.New("cluster: expected hello")
	}
	if err := json.Unmarshal(b, &h); err != nil || h.Node == "" {
		return h, errors.New("cluster: bad hello")
	}
	return h, nil
}

// Probe opens a bus stream to addr and exchanges hellos: it returns the name
// of the node that answers there, or the transport's error (which address,
// which cause: nothing listens, another cluster key). `xmppctl cluster join`
// uses it before changing anything.
func Probe(ctx context.Context, tr Transport, addr, node string, inc uint64) (string, error) {
	c, err := tr.DialStream(ctx, addr, StreamKind)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := writeHello(c, hello{Node: node, Inc: inc}); err != nil {
		return "", fmt.Errorf("cluster peer %s: %w", addr, err)
	}
	h, err := readHello(bufio.NewReader(c))
	if err != nil {
		return "", fmt.Errorf("cluster peer %s: no bus answer: %w", addr, err)
	}
	return h.Node, nil
}
