package replicated

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Every inter-node connection is TLS 1.3 in both directions with one
// certificate derived deterministically from the cluster key: both sides
// present it and accept only a peer presenting the same public key, so only
// holders of the cluster key can complete a handshake (the TLS 1.3
// CertificateVerify proves possession of the derived private key). After the
// handshake the dialer writes one byte naming the stream: raft's transport or
// xedge's RPC (write forwarding, membership reports).

const (
	streamRaft = byte('R')
	streamRPC  = byte('F')
)

// clusterTLS derives the cluster identity from key.
func clusterTLS(key []byte) (*tls.Config, error) {
	if len(key) < 16 {
		return nil, errors.New("replicated: cluster key must be at least 16 bytes")
	}
	seed, err := hkdf.Key(sha256.New, key, []byte("xedge cluster identity"), "xedge/replicated tls v1", ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("replicated: derive cluster identity: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "xedge-cluster"},
		DNSNames:     []string{"xedge-cluster"},
		NotBefore:    time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("replicated: cluster certificate: %w", err)
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) != 1 {
			return errPeerKey
		}
		c, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		if pk, ok := c.PublicKey.(ed25519.PublicKey); !ok || !pk.Equal(pub) {
			return errPeerKey
		}
		return nil
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}},
		ClientAuth:            tls.RequireAnyClientCert,
		InsecureSkipVerify:    true, // the peer is verified by VerifyPeerCertificate against the cluster key
		VerifyPeerCertificate: verify,
		ServerName:            "xedge-cluster",
	}, nil
}

// mux accepts TLS connections on the cluster address and splits them between
// raft's stream layer and the RPC server.
type mux struct {
	ln      net.Listener
	tls     *tls.Config
	log     *slog.Logger
	raftCh  chan net.Conn
	rpc     func(net.Conn)
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	connsMu sync.Mutex
	conns   map[net.Conn]struct{}
	warned  map[string]time.Time
}

// newMux builds the mux; listen opens its listener (Start: New does no I/O).
func newMux(tc *tls.Config, log *slog.Logger) *mux {
	return &mux{tls: tc, log: log, raftCh: make(chan net.Conn), closed: make(chan struct{}),
		conns: map[net.Conn]struct{}{}, warned: map[string]time.Time{}}
}

func (m *mux) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("replicated: listen on cluster address %s: %w", addr, err)
	}
	m.ln = ln
	return nil
}

func (m *mux) track(c net.Conn, add bool) bool {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	if add {
		select {
		case <-m.closed:
			return false
		default:
		}
		m.conns[c] = struct{}{}
	} else {
		delete(m.conns, c)
	}
	return true
}

func (m *mux) serve() {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			c, err := m.ln.Accept()
			if err != nil {
				select {
				case <-m.closed:
					return
				default:
				}
				m.log.Warn("cluster accept failed", "err", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.handle(c)
			}()
		}
	}()
}

func (m *mux) handle(raw net.Conn) {
	c := tls.Server(raw, m.tls)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var kind [1]byte
	if err := c.Handshake(); err != nil {
		if !errors.Is(err, io.EOF) {
			m.warnOnce(raw.RemoteAddr().String(), err)
		}
		_ = raw.Close()
		return
	}
	if _, err := io.ReadFull(c, kind[:]); err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	switch kind[0] {
	case streamRaft:
		tc, ok := m.wrap(c)
		if !ok {
			return
		}
		select {
		case m.raftCh <- tc:
		case <-m.closed:
			_ = tc.Close()
		}
	case streamRPC:
		if !m.track(c, true) {
			_ = c.Close()
			return
		}
		m.rpc(c)
		m.track(c, false)
		_ = c.Close()
	default:
		m.other(kind[0], c) // streams.go: kinds registered with HandleStream
	}
}

// wrap tracks a raft connection so close() can end it: raft's transport does
// not close the connections it accepted or pooled when it shuts down.
func (m *mux) wrap(c net.Conn) (net.Conn, bool) {
	tc := &trackedConn{Conn: c, m: m}
	if !m.track(tc, true) {
		_ = c.Close()
		return nil, false
	}
	return tc, true
}

type trackedConn struct {
	net.Conn
	m    *mux
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.m.track(c, false) })
	return c.Conn.Close()
}

// warnOnce logs a failed inbound handshake at most once a minute per host.
func (m *mux) warnOnce(addr string, err error) {
	host, _, _ := net.SplitHostPort(addr)
	m.connsMu.Lock()
	last, seen := m.warned[host]
	if !seen || time.Since(last) > time.Minute {
		m.warned[host] = time.Now()
	}
	m.connsMu.Unlock()
	if !seen || time.Since(last) > time.Minute {
		m.log.Warn("refused cluster connection: handshake failed (wrong cluster key?)", "from", addr, "err", err)
	}
}

func (m *mux) close() {
	m.once.Do(func() {
		close(m.closed)
		if m.ln != nil {
			_ = m.ln.Close()
		}
		m.connsMu.Lock()
		conns := make([]net.Conn, 0, len(m.conns))
		for c := range m.conns {
			conns = append(conns, c)
		}
		m.connsMu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	m.wg.Wait()
}

// dial opens an authenticated stream of the given kind to addr.
func dialCluster(ctx context.Context, addr string, tc *tls.Config, kind byte) (net.Conn, error) {
	d := &net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster peer %s: %w: %w", addr, ErrUnreachable, err)
	}
	c := tls.Client(raw, tc)
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := c.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		if kind := classifyHandshake(err); kind != ErrWrongKey {
			return nil, fmt.Errorf("cluster peer %s: TLS handshake: %w: %w", addr, kind, err)
		}
		return nil, fmt.Errorf("cluster peer %s refused us or is not a member (wrong cluster key?): %w: %w", addr, ErrWrongKey, err)
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("cluster peer %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// streamLayer is raft's view of the mux.
type streamLayer struct {
	m *mux
}

func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.raftCh:
		return c, nil
	case <-l.m.closed:
		return nil, errors.New("replicated: transport closed")
	}
}

func (l *streamLayer) Close() error   { l.m.close(); return nil }
func (l *streamLayer) Addr() net.Addr { return l.m.ln.Addr() }

func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := dialCluster(ctx, string(address), l.m.tls, streamRaft)
	if err != nil {
		return nil, err
	}
	tc, ok := l.m.wrap(c)
	if !ok {
		return nil, errors.New("replicated: transport closed")
	}
	return tc, nil
}

// rpcRequest is one RPC over the cluster transport.
type rpcRequest struct {
	Op     string    `json:"op"` // "apply", "barrier", "report", "leave", "eph", "ramimage"
	Cmd    []byte    `json:"cmd,omitempty"`
	RAM    bool      `json:"ram,omitempty"`    // apply: the batch writes RAM tables
	Index  uint64    `json:"index,omitempty"`  // ramimage: the sync marker's index
	Tables []string  `json:"tables,omitempty"` // ramimage: disc tables wanted besides the RAM ones
	Report *report   `json:"report,omitempty"`
	Eph    *ephBatch `json:"eph,omitempty"`
	ID     string    `json:"id,omitempty"`
	Hops   int       `json:"hops"`
}

type rpcResponse struct {
	Index  uint64 `json:"index,omitempty"`
	Err    string `json:"err,omitempty"`
	Kind   string `json:"kind,omitempty"` // "conflict", "unavailable", "notable", "" (other)
	Commit uint64 `json:"commit,omitempty"`
	Leader string `json:"leader,omitempty"`
	Image  []byte `json:"image,omitempty"` // ramimage: a tables snapshot of the wanted tables
}

// report is what each node tells the leader periodically: it doubles as the
// join request.
type report struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Storage string `json:"storage"` // "durable" or "ram-only"
	Applied uint64 `json:"applied"`
	Witness bool   `json:"witness,omitempty"`
	RAM     string `json:"ram,omitempty"` // "synced" or "unsynced"
	Inc     uint64 `json:"inc,omitempty"` // the reporting process's incarnation
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(append(hdr[:], b...)); err != nil {
		return err
	}
	return nil
}

func readFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > 64<<20 {
		return fmt.Errorf("replicated: rpc frame too large (%d bytes)", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// rpcClient keeps idle authenticated connections per peer.
type rpcClient struct {
	tls  *tls.Config
	mu   sync.Mutex
	idle map[string][]*rpcConn
	done bool
}

type rpcConn struct {
	c net.Conn
	r *bufio.Reader
}

func (p *rpcClient) call(ctx context.Context, addr string, req *rpcRequest) (*rpcResponse, error) {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return nil, errors.New("replicated: stopped")
	}
	var rc *rpcConn
	if l := p.idle[addr]; len(l) > 0 {
		rc, p.idle[addr] = l[len(l)-1], l[:len(l)-1]
	}
	p.mu.Unlock()
	if rc == nil {
		c, err := dialCluster(ctx, addr, p.tls, streamRPC)
		if err != nil {
			return nil, err
		}
		rc = &rpcConn{c: c, r: bufio.NewReader(c)}
	}
	stop := context.AfterFunc(ctx, func() { _ = rc.c.SetDeadline(time.Now()) })
	var resp rpcResponse
	err := writeFrame(rc.c, req)
	if err == nil {
		err = readFrame(rc.r, &resp)
	}
	if !stop() || err != nil {
		_ = rc.c.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("cluster peer %s: %w: %w", addr, ErrUnreachable, err)
	}
	p.mu.Lock()
	if p.done || len(p.idle[addr]) >= 8 {
		_ = rc.c.Close()
	} else {
		p.idle[addr] = append(p.idle[addr], rc)
	}
	p.mu.Unlock()
	return &resp, nil
}

// callWithin is call with at most d for this attempt (the caller's ctx still
// applies): a peer that stopped answering without closing the connection fails
// the attempt instead of holding the caller.
func (p *rpcClient) callWithin(ctx context.Context, addr string, req *rpcRequest, d time.Duration) (*rpcResponse, error) {
	actx, cancel := context.WithTimeout(ctx, max(d, time.Millisecond))
	defer cancel()
	return p.call(actx, addr, req)
}

func (p *rpcClient) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	for _, l := range p.idle {
		for _, rc := range l {
			_ = rc.c.Close()
		}
	}
	p.idle = nil
}

// serveRPC answers requests on one connection until it closes.
func serveRPC(c net.Conn, handle func(*rpcRequest) *rpcResponse) {
	r := bufio.NewReader(c)
	for {
		var req rpcRequest
		if err := readFrame(r, &req); err != nil {
			return
		}
		resp := handle(&req)
		if resp == nil {
			return // no reply: the caller closes the connection
		}
		if err := writeFrame(c, resp); err != nil {
			return
		}
	}
}
