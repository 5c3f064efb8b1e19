// Package component is xmppd's listener for external components (XEP-0114,
// jabber:component:accept): the stream header, the handshake (hex SHA-1 of the
// stream ID and the component's shared secret), one connection per component
// domain, and the stanza exchange, in which the component may only send from its
// own domain.
//
// It owns the protocol only. Routing is the caller's: stanzas from a component go
// to Config.Route, and the caller hands stanzas for a component's domain to
// Server.Deliver (the server wires that to the router's domain routing and, in a
// cluster, to the bus). It must not import xmppd/server, the router or any module.
package component

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"xedge/xmppd/internal/listen"
	"xedge/xmppd/jid"
	"xedge/xmppd/xmlstream"
)

// NS is the namespace of the component protocol (XEP-0114).
const NS = "jabber:component:accept"

const nsStreams = "urn:ietf:params:xml:ns:xmpp-streams"

// Config configures a Server.
type Config struct {
	// Secrets maps each component domain allowed to connect to its shared secret.
	Secrets map[string]string
	// Limits of the XML parser (the same as the client listener's).
	Limits xmlstream.Limits
	// HandshakeTimeout bounds the time from accept to a successful handshake.
	HandshakeTimeout time.Duration
	// SendQueue is the number of stanzas queued for a component before it is
	// disconnected as too slow.
	SendQueue int
	Logger    *slog.Logger
	// Route takes a stanza the component sent (from and to checked: from is at the
	// component's domain, to is set). The stanza is the callee's.
	Route func(ctx context.Context, st *xmlstream.Element)
	// Elsewhere (may be nil) reports whether domain is connected to another
	// node of the cluster: then a new connection gets <conflict/> too.
	Elsewhere func(domain string) bool
	// Connected and Disconnected (may be nil) are called when a component domain
	// completes its handshake here and when its connection ends.
	Connected    func(domain string)
	Disconnected func(domain string)
}

// Server accepts component connections on its listeners.
type Server struct {
	cfg   Config
	log   *slog.Logger
	addrs []string

	mu     sync.Mutex
	lns    []net.Listener
	conns  map[string]*conn   // by domain, after the handshake
	all    map[*conn]struct{} // every open connection
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Server; call Listen, then Start.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 30 * time.Second
	}
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = 1000
	}
	if cfg.Route == nil {
		cfg.Route = func(context.Context, *xmlstream.Element) {}
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "xep0114"),
		conns: map[string]*conn{}, all: map[*conn]struct{}{}}
}

// Listen adds a listener address (host:port) opened by Start.
func (s *Server) Listen(addr string) { s.addrs = append(s.addrs, addr) }

// Addrs returns the bound listener addresses (after Start).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, 0, len(s.lns))
	for _, l := range s.lns {
		out = append(out, l.Addr())
	}
	return out
}

// Start opens the listeners and serves them until Stop.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	lns, err := listen.Open(s.addrs)
	if err != nil {
		return fmt.Errorf("component listener: %w", err)
	}
	s.lns = lns
	for _, ln := range lns {
		s.log.Info("listening for components", "addr", ln.Addr().String())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			listen.Serve(ln, s.log, s.accept)
		}()
	}
	return nil
}

// Stop closes the listeners and every component connection and waits for them.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	for _, l := range s.lns {
		l.Close()
	}
	for c := range s.all {
		c.close("system-shutdown", "")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("component: stop: %w", ctx.Err())
	}
}

// Domains returns the component domains connected here, sorted.
func (s *Server) Domains() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.conns))
}

// Deliver queues st for the component connected here for domain and reports
// whether there is one. st is the component's (do not change it afterwards).
func (s *Server) Deliver(domain string, st *xmlstream.Element) bool {
	s.mu.Lock()
	c := s.conns[domain]
	s.mu.Unlock()
	if c == nil {
		return false
	}
	return c.send(st)
}

// accept serves a new component connection; false once the server stops.
func (s *Server) accept(nc net.Conn) bool {
	c := &conn{s: s, nc: nc, out: make(chan *xmlstream.Element, s.cfg.SendQueue), done: make(chan struct{})}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		nc.Close()
		return false
	}
	s.all[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go c.serve()
	return true
}

type conn struct {
	s      *Server
	nc     net.Conn
	domain string // set after the handshake
	out    chan *xmlstream.Element
	done   chan struct{}

	wmu       sync.Mutex // serializes writes to nc
	closeOnce sync.Once
}

func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

// close ends the stream with a stream error condition ("" = clean close).
func (c *conn) close(cond, text string) {
	c.closeOnce.Do(func() {
		var b []byte
		if cond != "" {
			e := xmlstream.New(xmlstream.NSStream, "error")
			e.Append(xmlstream.New(nsStreams, cond))
			if text != "" {
				e.Append(xmlstream.New(nsStreams, "text").AppendText(text))
			}
			b = xmlstream.AppendElement(b, e, NS)
		}
		b = append(b, xmlstream.StreamClose...)
		c.write(b)
		close(c.done)
		c.nc.Close()
	})
}

func (c *conn) send(st *xmlstream.Element) bool {
	select {
	case c.out <- st:
		return true
	case <-c.done:
		return false
	default:
		c.s.log.Warn("component too slow, disconnecting", "domain", c.domain, "queue", cap(c.out))
		go c.close("policy-violation", "send queue full")
		return false
	}
}

func (c *conn) writer() {
	var buf []byte
	for {
		select {
		case <-c.done:
			return
		case st := <-c.out:
			buf = buf[:0]
			for {
				respace(st, xmlstream.NSClient, NS)
				buf = xmlstream.AppendElement(buf, st, NS)
				if len(buf) > 32<<10 {
					break
				}
				select {
				case st = <-c.out:
					continue
				default:
				}
				break
			}
			if err := c.write(buf); err != nil {
				c.close("", "")
				return
			}
		}
	}
}

func streamID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Handshake returns the handshake value of XEP-0114: hex(SHA-1(streamID + secret)).
func Handshake(streamID, secret string) string {
	h := sha1.Sum([]byte(streamID + secret))
	return hex.EncodeToString(h[:])
}

func (c *conn) serve() {
	s := c.s
	defer s.wg.Done()
	remote := c.nc.RemoteAddr().String()
	defer func() {
		c.close("", "")
		s.mu.Lock()
		delete(s.all, c)
		registered := c.domain != "" && s.conns[c.domain] == c
		if registered {
			delete(s.conns, c.domain)
		}
		s.mu.Unlock()
		if registered {
			s.log.Info("component disconnected", "domain", c.domain, "remote", remote)
			if s.cfg.Disconnected != nil {
				s.cfg.Disconnected(c.domain)
			}
		}
	}()
	c.nc.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	dec := xmlstream.NewDecoder(bufio.NewReaderSize(c.nc, 4096), s.cfg.Limits)
	hdr, err := dec.StreamHeader()
	id := streamID()
	if err != nil {
		c.write(xmlstream.AppendStreamHeader(nil, NS, xmlstream.Attr{Local: "id", Value: id}))
		c.close(condOf(err, "not-well-formed"), "")
		return
	}
	domain := strings.ToLower(hdr.Attr("to"))
	c.write(xmlstream.AppendStreamHeader(nil, NS, xmlstream.Attr{Local: "from", Value: domain}, xmlstream.Attr{Local: "id", Value: id}))
	if hdr.Space != xmlstream.NSStream || hdr.Local != "stream" {
		c.close("invalid-namespace", "")
		return
	}
	if dec.DefaultNS() != NS {
		c.close("invalid-namespace", "expected "+NS)
		return
	}
	secret, ok := s.cfg.Secrets[domain]
	if !ok {
		s.log.Warn("component for an unknown domain refused", "domain", domain, "remote", remote)
		c.close("host-unknown", "")
		return
	}
	hs, err := dec.Next()
	if err != nil {
		c.close(condOf(err, ""), "")
		return
	}
	if hs.Local != "handshake" || hs.Space != NS {
		c.close("not-authorized", "handshake expected")
		return
	}
	want := Handshake(id, secret)
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(strings.TrimSpace(hs.Text()))), []byte(want)) != 1 {
		s.log.Warn("component handshake failed: wrong secret", "domain", domain, "remote", remote)
		c.close("not-authorized", "")
		return
	}
	s.mu.Lock()
	if _, dup := s.conns[domain]; dup || (s.cfg.Elsewhere != nil && s.cfg.Elsewhere(domain)) {
		s.mu.Unlock()
		s.log.Warn("component refused: domain already connected", "domain", domain, "remote", remote)
		c.close("conflict", "")
		return
	}
	c.domain = domain
	s.conns[domain] = c
	s.mu.Unlock()
	if err := c.write([]byte("<handshake/>")); err != nil {
		return
	}
	s.log.Info("component connected", "domain", domain, "remote", remote)
	if s.cfg.Connected != nil {
		s.cfg.Connected(domain)
	}
	go c.writer()
	c.nc.SetReadDeadline(time.Time{})
	for {
		st, err := dec.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				c.close("", "")
			} else {
				c.close(condOf(err, ""), "")
			}
			return
		}
		switch st.Local {
		case "message", "presence", "iq":
		default:
			c.close("unsupported-stanza-type", "")
			return
		}
		from, ferr := jid.Parse(st.Attr("from"))
		if ferr != nil || from.Domain != domain {
			s.log.Warn("component sent a stanza from outside its domain", "domain", domain, "from", st.Attr("from"))
			c.close("invalid-from", "")
			return
		}
		to, terr := jid.Parse(st.Attr("to"))
		if terr != nil || st.Attr("to") == "" {
			c.close("improper-addressing", "missing or invalid to")
			return
		}
		st.SetAttr("from", from.String())
		st.SetAttr("to", to.String())
		respace(st, NS, xmlstream.NSClient)
		s.cfg.Route(s.ctx, st)
	}
}

// condOf returns the stream error condition for a decoder error: the parser's own
// condition, or def for a read error ("" = just close).
func condOf(err error, def string) string {
	var xe *xmlstream.Error
	if errors.As(err, &xe) {
		return xe.Condition
	}
	return def
}

// respace moves st and its descendants in namespace from (the stream's default
// namespace on one side) to namespace to: jabber:client inside xmppd,
// jabber:component:accept on the wire.
func respace(e *xmlstream.Element, from, to string) {
	if e.Space == from {
		e.Space = to
	}
	for _, n := range e.Nodes {
		if c, ok := n.(*xmlstream.Element); ok {
			respace(c, from, to)
		}
	}
}
