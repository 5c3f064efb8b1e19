// Package s2s is xmppd's server-to-server federation (RFC 6120 s2s, jabber:server):
// outgoing links found by DNS SRV (_xmpps-server._tcp and _xmpp-server._tcp, then
// the domain's A/AAAA on port 5269), STARTTLS with certificate verification, SASL
// EXTERNAL (XEP-0178) when the peer accepts our certificate and server dialback
// (XEP-0220, keys per XEP-0185) when it does not, a bounded queue per remote domain
// while its link is made, and bounces (<remote-server-not-found/>,
// <remote-server-timeout/>) when it cannot be; incoming streams on a listener with
// STARTTLS, SASL EXTERNAL and dialback (verified against the originating domain's
// authoritative server, and answered as the authoritative server for our own
// domain), their stanzas handed to Config.Route.
//
// It owns the protocol and the per-node links only. Which node of a cluster holds
// the link for a domain, and forwarding stanzas to it, is the caller's
// (xmppd/server/s2s.go). It must not import xmppd/server, the router or any module
// implementation (module's stanza helpers only).
package s2s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"xedge/xmppd/internal/listen"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces of the server-to-server protocol.
const (
	NSServer      = xmlstream.NSServer
	NSDialback    = "jabber:server:dialback"
	NSDialbackFt  = "urn:xmpp:features:dialback"
	NSTLS         = "urn:ietf:params:xml:ns:xmpp-tls"
	NSSASL        = "urn:ietf:params:xml:ns:xmpp-sasl"
	NSBidi        = "urn:xmpp:bidi"
	NSBidiFeature = "urn:xmpp:features:bidi"
	nsStreams     = "urn:ietf:params:xml:ns:xmpp-streams"
)

// Config configures a Server.
type Config struct {
	// Domain is the server's own XMPP domain (the originating domain of outgoing
	// links and the authoritative domain of dialback keys).
	Domain string
	// Local reports whether a domain is served here (Domain and the domains modules
	// serve, e.g. conference.DOMAIN): incoming stanzas to other domains are refused.
	// nil: only Domain.
	Local func(domain string) bool
	// Hosts reports whether a domain is one of the server's virtual hosts: a
	// stanza from a user of such a host goes out on a link of that host (stream
	// from and dialback keys are the host's). nil: only Domain; stanzas from other
	// local domains (conference.DOMAIN, components) use Domain's link.
	Hosts func(domain string) bool
	// TLS holds the certificate offered on both sides (server certificate on the
	// listener, client certificate on outgoing links for SASL EXTERNAL).
	TLS *tls.Config
	// RootCAs verifies peers' certificates (nil: the system's roots).
	RootCAs *x509.CertPool
	// SecureAuth refuses peers whose certificate does not verify (no dialback).
	SecureAuth bool
	// NoBidi turns bidirectional streams (XEP-0288) off: neither offered on the
	// listener nor asked for on outgoing links.
	NoBidi bool
	// AllowPlaintext lets links go on without TLS when the peer offers no STARTTLS
	// (dialback over plaintext). Default false: such a peer is unreachable.
	AllowPlaintext bool
	// Resolver is host:port of the DNS server for SRV and address lookups ("": the
	// system's resolver).
	Resolver string
	// DefaultPort is the port tried on the domain's addresses when it has no SRV
	// record (default 5269).
	DefaultPort int
	// DialbackSecret keys dialback (XEP-0185). Every node of a cluster must use the
	// same secret: the authoritative check may reach any of them.
	DialbackSecret []byte
	// Limits of the XML parser.
	Limits xmlstream.Limits
	// ConnectTimeout bounds resolving, connecting and authenticating a link
	// (default 30 s); stanzas queued meanwhile are bounced with
	// <remote-server-timeout/> when it expires.
	ConnectTimeout time.Duration
	// IdleTimeout closes an outgoing link without traffic (default 10 min) and an
	// incoming stream that sent nothing for twice as long.
	IdleTimeout time.Duration
	// QueueMax is the number of stanzas queued per remote domain (default 1000);
	// beyond it stanzas are bounced with <resource-constraint/>.
	QueueMax int
	// Route takes an incoming stanza (namespace jabber:client, from authenticated,
	// to local) and every bounce the links make. The stanza is the callee's.
	Route func(ctx context.Context, st *xmlstream.Element)
	// OnLink (may be nil) is called when an outgoing link to domain is being made
	// (up) and when it has ended (not up), in that order per domain, never
	// concurrently; it must not block (a cluster announces the link's owner).
	OnLink func(domain string, up bool)
	Logger *slog.Logger
	// Dial opens TCP connections (nil: net.Dialer). For tests.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Server runs the outgoing links and the incoming listeners.
type Server struct {
	cfg   Config
	log   *slog.Logger
	res   *net.Resolver
	addrs []string

	mu     sync.Mutex
	lns    []net.Listener
	out    map[string]*outLink    // by remote domain
	in     map[*inStream]struct{} // every open incoming stream
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Server; call Listen, then Start.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Domain = strings.ToLower(cfg.Domain)
	if cfg.Local == nil {
		d := cfg.Domain
		cfg.Local = func(x string) bool { return x == d }
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.QueueMax <= 0 {
		cfg.QueueMax = 1000
	}
	if cfg.DefaultPort <= 0 {
		cfg.DefaultPort = 5269
	}
	if cfg.Route == nil {
		cfg.Route = func(context.Context, *xmlstream.Element) {}
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{}
	}
	if cfg.Dial == nil {
		d := &net.Dialer{}
		cfg.Dial = d.DialContext
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "s2s"),
		out: map[string]*outLink{}, in: map[*inStream]struct{}{}}
	s.res = newResolver(cfg.Resolver)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
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

// Start opens the listeners.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lns, err := listen.Open(s.addrs)
	if err != nil {
		return fmt.Errorf("s2s listener: %w", err)
	}
	s.lns = lns
	for _, ln := range lns {
		s.log.Info("listening for servers", "addr", ln.Addr().String())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			listen.Serve(ln, s.log, s.accept)
		}()
	}
	return nil
}

// Stop closes the listeners, every link and stream, bounces what is still queued
// and waits for the goroutines.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.cancel()
	for _, l := range s.lns {
		l.Close()
	}
	links := slices.Collect(maps.Values(s.out))
	ins := slices.Collect(maps.Keys(s.in))
	s.mu.Unlock()
	for _, l := range links {
		l.shutdown("system-shutdown")
	}
	for _, c := range ins {
		c.close("system-shutdown", "")
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("s2s: stop: %w", ctx.Err())
	}
}

// Send queues st (namespace jabber:client, from and to prepared, to at a remote
// domain) on the link to to.Domain, making the link if there is none. It never
// blocks on the network; a stanza that cannot be sent is bounced through
// Config.Route.
func (s *Server) Send(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	domain := to.Domain
	if domain == "" || s.cfg.Local(domain) {
		s.bounce(ctx, st, module.ErrCancel, "remote-server-not-found", "")
		return
	}
	local := s.originOf(from)
	key := LinkKey(s.cfg.Domain, local, domain)
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		s.bounce(ctx, st, module.ErrCancel, "remote-server-not-found", "shutting down")
		return
	}
	l := s.out[key]
	if l == nil {
		l = newOutLink(s, local, domain)
		s.out[key] = l
		if s.cfg.OnLink != nil {
			s.cfg.OnLink(key, true)
		}
		s.wg.Add(1)
		go l.run()
	}
	ok := l.enqueue(st)
	s.mu.Unlock()
	if !ok {
		s.log.Warn("s2s queue full", "domain", domain, "queue", s.cfg.QueueMax)
		s.bounce(ctx, st, module.ErrWait, "resource-constraint", "too many stanzas queued for "+domain)
	}
}

// bounce routes the error reply for st (never for an error, RFC 6120 §8.3.1, nor
// for presence other than probes and directed available presence).
func (s *Server) bounce(ctx context.Context, st *xmlstream.Element, typ, cond, text string) {
	if st.Attr("type") == "error" || st.Attr("from") == "" {
		return
	}
	if st.Local == "presence" && st.Attr("type") != "" && st.Attr("type") != "probe" && st.Attr("type") != "subscribe" {
		return
	}
	s.cfg.Route(ctx, module.Error(st, typ, cond, text))
}

// originOf is the local domain a stanza from from leaves as: its virtual host,
// else the default host.
func (s *Server) originOf(from jid.JID) string {
	if s.cfg.Hosts != nil && from.Domain != s.cfg.Domain && s.cfg.Hosts(from.Domain) {
		return from.Domain
	}
	return s.cfg.Domain
}

// LinkKey names the outgoing link from local (one of the virtual hosts) to
// remote, in the link table and to Config.OnLink: remote for the default host
// def, remote/local for another host.
func LinkKey(def, local, remote string) string {
	if local == def || local == "" {
		return remote
	}
	return remote + "/" + local
}

// Key names the link a stanza from from to to leaves on (LinkKey).
func (s *Server) Key(from, to jid.JID) string {
	return LinkKey(s.cfg.Domain, s.originOf(from), to.Domain)
}

// attachBidi makes an incoming bidirectional stream from domain to local
// (XEP-0288) this node's link from local to domain, unless there is one already.
func (s *Server) attachBidi(local, domain string, in *inStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.Hosts == nil || !s.cfg.Hosts(local) {
		local = s.cfg.Domain
	}
	key := LinkKey(s.cfg.Domain, local, domain)
	if _, ok := s.out[key]; ok || s.ctx.Err() != nil {
		return
	}
	l := newOutLink(s, local, domain)
	l.st, l.up, l.auth, l.borrowed, l.remote = in.c, true, "bidi", true, in.remote
	l.verified = s.verifyCert(in.c.peerCerts, domain) == nil
	s.out[key] = l
	if s.cfg.OnLink != nil {
		s.cfg.OnLink(key, true)
	}
	in.links = append(in.links, l)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		l.writer()
	}()
	s.log.Info("s2s link up", "domain", domain, "remote", in.remote, "auth", "bidi (on the peer's stream)")
}

// removeOut drops l from the link table if it is still the domain's link.
func (s *Server) removeOut(l *outLink) {
	s.mu.Lock()
	s.removeOutLocked(l)
	s.mu.Unlock()
}

// removeOutLocked is removeOut under s.mu.
func (s *Server) removeOutLocked(l *outLink) {
	if k := l.key(); s.out[k] == l {
		delete(s.out, k)
		if s.cfg.OnLink != nil {
			s.cfg.OnLink(k, false)
		}
	}
}

// LinkStatus describes one link for `xmppctl s2s`.
type LinkStatus struct {
	Domain    string `json:"domain"`
	From      string `json:"from,omitempty"` // the local host of an outgoing link, if not the default one
	Direction string `json:"direction"`      // "out" or "in"
	State     string `json:"state"`          // connecting, up
	Auth      string `json:"auth,omitempty"`
	TLS       bool   `json:"tls"`
	Verified  bool   `json:"verified"` // the peer's certificate verified
	Queued    int    `json:"queued,omitempty"`
	Remote    string `json:"remote,omitempty"`
	// Node is the cluster node holding the link (set by the server: this node,
	// or another one for a domain whose link another node owns).
	Node string `json:"node,omitempty"`
}

// Status lists the outgoing links and the authenticated domains of incoming
// streams, sorted by domain and direction.
func (s *Server) Status() []LinkStatus {
	s.mu.Lock()
	links := slices.Collect(maps.Values(s.out))
	ins := slices.Collect(maps.Keys(s.in))
	s.mu.Unlock()
	var out []LinkStatus
	for _, l := range links {
		out = append(out, l.status())
	}
	for _, c := range ins {
		out = append(out, c.status()...)
	}
	slices.SortFunc(out, func(a, b LinkStatus) int {
		if c := strings.Compare(a.Domain, b.Domain); c != 0 {
			return c
		}
		return strings.Compare(a.Direction, b.Direction)
	})
	return out
}

// Domains returns the outgoing links here (up or being made) by LinkKey: the
// remote domain, remote/host for a link of a virtual host other than the default.
func (s *Server) Domains() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.out))
}

// verifyCert reports whether the chain certs is valid for domain under the
// configured roots (RFC 6125 DNS-ID; wildcards as crypto/x509 matches them).
func (s *Server) verifyCert(certs []*x509.Certificate, domain string) error {
	if len(certs) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{DNSName: domain, Roots: s.cfg.RootCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// respace moves e and its descendants in namespace from to namespace to
// (jabber:client inside xmppd, jabber:server on the wire).
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

// condOf returns the stream error condition for a decoder error: the parser's own
// condition, or def for a read error ("" = just close).
func condOf(err error, def string) string {
	var xe *xmlstream.Error
	if errors.As(err, &xe) {
		return xe.Condition
	}
	return def
}
