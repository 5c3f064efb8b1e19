// Package c2s is xmppd's client-to-server stream layer (RFC 6120): listeners with
// STARTTLS and direct TLS (XEP-0368), the stream state machine (connect -> TLS ->
// SASL -> restart -> bind -> established), SASL SCRAM-SHA-1/-256 and PLAIN (PLAIN
// only under TLS), resource binding, in-band registration before authentication
// (XEP-0077), stream management with resumption (XEP-0198), client state indication
// (XEP-0352), the server's entity caps in stream features (XEP-0115), whitespace
// keepalives, idle timeouts, per-connection read shaping, failed-auth throttling and
// the stream errors of RFC 6120 §4.9.
//
// It owns connections and sessions; routing decisions belong to package router and
// user data to package accounts. It must not import server, admin or any module.
package c2s

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"xedge/internal/backoff"
	"xedge/xmppd/accounts"
	"xedge/xmppd/router"
	"xedge/xmppd/xmlstream"
)

// Config configures client streams.
type Config struct {
	Domain            string
	TLS               *tls.Config
	Limits            xmlstream.Limits
	Shaper            int // bytes/s per connection, 0 = off
	Keepalive         time.Duration
	IdleTimeout       time.Duration
	AuthTimeout       time.Duration
	SMTimeout         time.Duration
	SMMaxQueue        int
	SendQueue         int
	AllowRegistration bool
	// AllowPlaintext lets SCRAM authenticate a stream without TLS (PLAIN and
	// registration still need TLS). The zero value requires STARTTLS first.
	AllowPlaintext bool
	AuthFailMax    int
	AuthFailTime   time.Duration
	// RegLimit bounds in-band registrations per source IP within RegWindow (0: no limit).
	RegLimit  int
	RegWindow time.Duration
	// ParkAfter is how long a stream with no input keeps its read buffers before
	// its reader parks without them (default 1 s; see idle.go).
	ParkAfter time.Duration
	// Identity is the server's disco identity (category, type, name) for caps.
	IdentityCategory, IdentityType, IdentityName string
	Logger                                       *slog.Logger

	noPoller bool // tests: park every stream in its own goroutine
}

// Listener is one configured listening address.
type Listener struct {
	Addr      string
	DirectTLS bool
}

// Server accepts client connections.
type Server struct {
	cfg      Config
	router   *router.Router
	accounts *accounts.Accounts
	authn    Authenticator // SetAuthenticator; nil: the accounts table
	cbOn     bool          // SetChannelBinding: SCRAM-*-PLUS with tls-exporter
	log      *slog.Logger
	throttle *throttle
	regLimit *throttle // nil: registrations unlimited

	regPolicy string // SetRegistration ("": AllowRegistration decides)

	hostList  []Host                // SetHosts
	hostsOnce sync.Once             // initHosts
	hosts     map[string]*hostState // served domains (hosts.go)
	limits    connLimits            // SetPerIPLimit, SetListenerShaper (limits.go)

	lnCfg []Listener

	capsMu sync.Mutex
	capsN  int    // disco features counted when capsV was computed
	capsV  string // cached XEP-0115 ver (capsVer)
	capsF  string // the extended forms' part of the ver string when capsV was computed
	// capsForms returns the extended forms of the server's disco#info (SetDiscoForms).
	capsForms func() []*xmlstream.Element

	baseCtx    context.Context // parent of every connection's context; cancelled by Stop
	baseCancel context.CancelFunc

	mu        sync.Mutex
	lns       []net.Listener
	addrs     []string
	conns     map[*conn]struct{}
	resumable map[string]*session // XEP-0198 resumption id -> session
	stopping  bool
	draining  bool           // new connections are refused (SetDraining)
	wg        sync.WaitGroup // accept loops and connections
	poller    *poller        // waits for input on parked streams; nil: each waits in its goroutine
	repl      Replicator     // nil: resumption state stays on this node
	writers   *writerPool    // goroutines that run the sessions' writers
}

// New returns a c2s server; add listeners with Listen before Start.
func New(cfg Config, r *router.Router, a *accounts.Accounts) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = 1000
	}
	if cfg.SMMaxQueue <= 0 {
		cfg.SMMaxQueue = 1000
	}
	if cfg.ParkAfter <= 0 {
		cfg.ParkAfter = defaultParkAfter
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = time.Minute
	}
	if cfg.AuthFailMax <= 0 {
		cfg.AuthFailMax = 5
	}
	if cfg.AuthFailTime <= 0 {
		cfg.AuthFailTime = time.Minute
	}
	if cfg.IdentityCategory == "" {
		cfg.IdentityCategory, cfg.IdentityType, cfg.IdentityName = "server", "im", "xmppd"
	}
	log := cfg.Logger.With("component", "c2s")
	s := &Server{
		cfg: cfg, router: r, accounts: a, log: log,
		throttle:  newThrottle(cfg.AuthFailMax, cfg.AuthFailTime, log),
		conns:     map[*conn]struct{}{},
		resumable: map[string]*session{},
	}
	s.baseCtx, s.baseCancel = context.WithCancel(context.Background())
	s.writers = newWriterPool(defaultMaxParkedWriters, writerIdleTimeout, s.baseCtx.Done())
	if cfg.RegLimit > 0 {
		if cfg.RegWindow <= 0 {
			cfg.RegWindow = time.Hour
		}
		s.regLimit = newThrottle(cfg.RegLimit, cfg.RegWindow, log)
		s.regLimit.what = "too many in-band registrations; refusing more from this address for a while"
	}
	r.HandleIQ(nsReg, s.handleRegisterIQ)
	r.DiscoFeature(nsReg)
	return s
}

// Listen adds a listener (before Start).
func (s *Server) Listen(addr string, directTLS bool) {
	s.lnCfg = append(s.lnCfg, Listener{Addr: addr, DirectTLS: directTLS})
}

// Addrs returns the bound listener addresses ("starttls tcp://a" style for humans).
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.addrs...)
}

// Start binds every listener and starts accepting.
func (s *Server) Start(ctx context.Context) error {
	if s.cfg.TLS == nil {
		return errors.New("c2s: no TLS configuration")
	}
	s.hostsOnce.Do(s.initHosts)
	if !s.cfg.noPoller {
		if p, err := newPoller(s.log); err == nil {
			s.poller = p
		} else {
			s.log.Info("idle streams wait in their own goroutines", "reason", err)
		}
	}
	var lc net.ListenConfig
	for _, l := range s.lnCfg {
		ln, err := lc.Listen(ctx, "tcp", l.Addr)
		if err != nil {
			for _, o := range s.lns {
				o.Close()
			}
			s.poller.stop()
			return fmt.Errorf("c2s: listen %s: %w", l.Addr, err)
		}
		kind := "starttls"
		if l.DirectTLS {
			kind = "direct-tls"
		}
		s.mu.Lock()
		s.lns = append(s.lns, ln)
		s.addrs = append(s.addrs, kind+" "+ln.Addr().String())
		s.mu.Unlock()
		s.log.Info("listening", "addr", ln.Addr().String(), "tls", kind)
		s.wg.Add(1)
		go s.accept(ln, l.DirectTLS)
	}
	return nil
}

func (s *Server) accept(ln net.Listener, directTLS bool) {
	defer s.wg.Done()
	rate, ownShaper := s.listenerShaper(ln)
	// Out of file descriptors and the like: back off, keep serving.
	bo := backoff.Backoff{Min: 5 * time.Millisecond, Max: time.Second}
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay := bo.Next()
			s.log.Warn("accept failed", "err", err, "retry_in", delay)
			if backoff.Sleep(s.baseCtx, delay) != nil {
				return // Stop: the listener is closed too
			}
			continue
		}
		bo.Reset()
		c := newConn(s, nc, directTLS)
		c.lnAddr = ln.Addr()
		c.regOK = s.registrationOn(ln.Addr(), c.vhost)
		if ownShaper {
			c.shape(rate)
		}
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		if s.draining {
			s.mu.Unlock()
			if directTLS {
				nc.Close()
			} else {
				go c.sendStreamError("system-shutdown", "this node is draining: connect to another one")
			}
			continue
		}
		if !s.admit(c) {
			s.mu.Unlock()
			go c.refuseOverCap(directTLS, s.limits.max)
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve() // ends with connGone

	}
}

// Stop closes the listeners, ends every stream with <system-shutdown/>, terminates
// detached (resumable) sessions, and waits for the connections to finish or ctx.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	s.baseCancel()
	for _, ln := range s.lns {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	var detached []*session
	for _, ss := range s.resumable {
		detached = append(detached, ss)
	}
	s.mu.Unlock()
	for _, c := range conns {
		if ss := c.session(); ss != nil && s.leaveToPeers(ss) {
			// Other nodes hold its state: drop the connection as a network failure
			// would, and the client resumes elsewhere.
			c.closeRaw()
			continue
		}
		c.shutdown("system-shutdown", "")
	}
	for _, ss := range detached {
		if s.leaveToPeers(ss) {
			ss.mu.Lock()
			if ss.detach != nil {
				ss.detach.Stop() // the peers' copies expire it, not this node
			}
			ss.mu.Unlock()
			continue
		}
		safely(s.log, ss.expireIfDetached)
	}
	if s.repl != nil {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := s.repl.Sync(sctx); err != nil {
			s.log.Warn("stream management: resumption state not confirmed by another node at stop", "err", err)
		}
		cancel()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.poller.stop()
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			c.closeRaw()
		}
		s.poller.stop()
		return fmt.Errorf("c2s: stop: %w", ctx.Err())
	}
}

// connGone forgets a connection that has ended (its last goroutine returns).
func (s *Server) connGone(c *conn) {
	s.release(c)
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) addResumable(id string, ss *session) {
	s.mu.Lock()
	s.resumable[id] = ss
	s.mu.Unlock()
}

func (s *Server) takeResumable(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resumable[id]
}

// leaveToPeers reports whether a stopping server leaves ss to other nodes
// (resumable, replicated, and peers hold copies) instead of ending it.
func (s *Server) leaveToPeers(ss *session) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return s.leaveToPeersLocked(ss)
}

func (s *Server) leaveToPeersLocked(ss *session) bool {
	ok := ss.repl != nil && ss.smResume && !ss.closing && !ss.terminated && !ss.moving
	return ok && s.repl != nil && s.repl.Replicated()
}

func (s *Server) dropResumable(id string, ss *session) {
	s.mu.Lock()
	if s.resumable[id] == ss {
		delete(s.resumable, id)
	}
	s.mu.Unlock()
}
