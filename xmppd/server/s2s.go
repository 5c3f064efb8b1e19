package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"xedge/storage"
	"xedge/xmppd/cluster"
	"xedge/xmppd/jid"
	"xedge/xmppd/s2s"
	"xedge/xmppd/tlscert"
	"xedge/xmppd/xmlstream"
)

// The server-to-server feature (docs/s2s.md): the s2s listener (--s2s), the
// router's remote route (stanzas for domains nobody here serves) to the outgoing
// links of xmppd/s2s, and one outgoing link per remote domain per cluster: the
// node that makes a link announces the domain in the ephemeral table S2STable,
// and the other nodes forward stanzas for that domain to it over the cluster bus.
// When several nodes announce the same domain (they made links at the same
// moment), the lowest node name is the owner, so every node picks the same one.

// S2STable is the ephemeral table in which a node announces the remote domains
// it holds an outgoing link to: key domain, value an S2SRow.
const S2STable = "s2s_link"

// S2SRow is a node's row in S2STable.
type S2SRow struct {
	Since time.Time `json:"since"`
}

// kindS2S is the bus message kind of a stanza for a remote domain whose link
// the receiving node owns (To: the domain, Body: the stanza).
const kindS2S = "s2s"

func init() { registerFeature(Feature{Name: "s2s", Build: buildS2S}) }

type s2sFeature struct {
	s   *Server
	srv *s2s.Server
}

func buildS2S(s *Server) ([]StagedComponent, error) {
	kc := s.cfg.S2S
	if kc.Listen == "" || s.cfg.Witness {
		s.Admin.Handle("s2s", func(context.Context, []string) (any, error) {
			return nil, errors.New("federation is off (set s2s, e.g. --s2s 0.0.0.0:5269)")
		})
		return nil, nil
	}
	certFile, keyFile := s.cfg.Cert, s.cfg.Key
	if certFile == "" {
		var err error
		certFile, keyFile, _, err = tlscert.EnsureSelfSigned(filepath.Join(s.cfg.Data, "tls"), s.cfg.Domain)
		if err != nil {
			return nil, err
		}
	}
	tlsCfg, err := tlscert.Config(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if err := s.hostCerts(tlsCfg); err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if kc.CAFile != "" {
		b, err := os.ReadFile(kc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s2s-ca-file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("s2s-ca-file %s: no PEM certificate in it", kc.CAFile)
		}
	}
	secret, err := s.dialbackSecret()
	if err != nil {
		return nil, fmt.Errorf("s2s dialback secret: %w", err)
	}
	f := &s2sFeature{s: s}
	lim := xmlstream.DefaultLimits()
	lim.MaxStanza, lim.MaxDepth = s.cfg.MaxStanza, s.cfg.MaxDepth
	domain := strings.ToLower(s.cfg.Domain)
	f.srv = s2s.New(s2s.Config{
		Domain: domain,
		Local: func(d string) bool {
			return d == domain || s.Router.IsLocal(d) || slices.Contains(s.Router.ServedDomains(), d)
		},
		Hosts: s.Router.IsLocal,
		TLS:   tlsCfg, RootCAs: roots, SecureAuth: kc.SecureAuth, AllowPlaintext: kc.AllowPlaintext, NoBidi: !kc.Bidi,
		Resolver: kc.Resolver, DefaultPort: kc.DefaultPort, DialbackSecret: secret, Limits: lim,
		ConnectTimeout: kc.Timeout, IdleTimeout: kc.IdleTimeout, QueueMax: kc.Queue,
		Route:  func(ctx context.Context, st *xmlstream.Element) { s.Router.Route(ctx, st) },
		OnLink: f.onLink,
		Logger: s.log,
	})
	f.srv.Listen(kc.Listen)
	s.Admin.Handle("s2s", f.admin)
	return []StagedComponent{{Stage: AfterModules, Name: "s2s", Start: f.start, Stop: f.stop}}, nil
}

// dialbackSecret is the dialback key secret: derived from the cluster key, so a
// verification reaching any node is answered alike, or else random per start (a
// single node; pending verifications of a previous run fail, nothing else).
func (s *Server) dialbackSecret() ([]byte, error) {
	if s.cfg.Clustered() {
		ck, err := s.cfg.LoadClusterKey()
		if err != nil {
			return nil, err
		}
		m := hmac.New(sha256.New, ck)
		m.Write([]byte("xedge s2s dialback"))
		return m.Sum(nil), nil
	}
	b := make([]byte, 32)
	rand.Read(b)
	return b, nil
}

func (f *s2sFeature) start(ctx context.Context) error {
	if b := f.s.Bus(); b != nil {
		b.Handle(kindS2S, f.fromBus)
	}
	f.s.Router.SetRemoteRoute(f.route)
	return f.srv.Start(ctx)
}

func (f *s2sFeature) stop(ctx context.Context) error {
	f.s.Router.SetRemoteRoute(nil)
	return f.srv.Stop(ctx)
}

// onLink announces (up) or withdraws this node's outgoing link for domain.
func (f *s2sFeature) onLink(domain string, up bool) {
	if up {
		b, _ := json.Marshal(S2SRow{Since: time.Now().UTC()})
		f.s.Store.Ephemeral(S2STable).Put(domain, b)
		return
	}
	f.s.Store.Ephemeral(S2STable).Delete(domain)
}

// owner returns the node that owns the link for domain if it is another node,
// else "" (this node owns it, or nobody does yet).
func (f *s2sFeature) owner(domain string) string {
	best := ""
	for _, r := range f.s.Store.Ephemeral(S2STable).Get(domain) {
		if best == "" || r.Node < best {
			best = r.Node
		}
	}
	if best == f.s.cfg.Node {
		return ""
	}
	return best
}

// route takes a stanza for a remote domain: over the bus to the node owning the
// domain's link, else onto a link from this node.
func (f *s2sFeature) route(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	if node := f.owner(f.srv.Key(from, to)); node != "" {
		if b := f.s.Bus(); b != nil {
			body := xmlstream.AppendElement(nil, st, xmlstream.NSClient)
			b.Send(node, &cluster.Message{Kind: kindS2S, To: to.Domain, Body: body},
				func(*cluster.Message, error) { f.srv.Send(context.WithoutCancel(ctx), st, from, to) })
			return
		}
	}
	f.srv.Send(ctx, st, from, to)
}

var s2sStreamHead = []byte("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

// fromBus sends a stanza another node forwarded onto this node's link (never
// forwarded again: no loops while the table converges).
func (f *s2sFeature) fromBus(ctx context.Context, _ cluster.Peer, m *cluster.Message) ([]byte, error) {
	d := xmlstream.NewDecoder(io.MultiReader(bytes.NewReader(s2sStreamHead), bytes.NewReader(m.Body)), xmlstream.DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		return nil, err
	}
	st, err := d.Next()
	if err != nil {
		f.s.log.Warn("s2s: undecodable stanza from the bus", "err", err)
		return nil, nil
	}
	from, _ := jid.Parse(st.Attr("from"))
	to, err := jid.Parse(st.Attr("to"))
	if err != nil {
		return nil, nil
	}
	f.srv.Send(ctx, st, from, to)
	return nil, nil
}

// admin is `xmppctl s2s`: this node's links, then the outgoing links other nodes
// of the cluster own (state "remote"), which this node forwards to.
func (f *s2sFeature) admin(context.Context, []string) (any, error) {
	st := f.srv.Status()
	for i := range st {
		st[i].Node = f.s.cfg.Node
	}
	f.s.Store.Ephemeral(S2STable).Scan("", func(r storage.Row) bool {
		if r.Node != f.s.cfg.Node {
			st = append(st, s2s.LinkStatus{Domain: r.Key, Direction: "out", State: "remote", Node: r.Node})
		}
		return true
	})
	return st, nil
}

// hostCerts makes c offer each virtual host's certificate to a peer naming it
// (SNI), and to a peer asking our client certificate on a host's outgoing link
// (SASL EXTERNAL); the default host keeps c's own certificate.
func (s *Server) hostCerts(c *tls.Config) error {
	hosts := s.cfg.HostNames()
	if len(hosts) < 2 {
		return nil
	}
	byName := map[string]*tls.Certificate{}
	for _, d := range hosts {
		hc, _ := s.cfg.Host(d)
		cert, err := s.hostCert(d, hc)
		if err != nil {
			return err
		}
		if cert != nil {
			byName[d] = cert
		}
	}
	c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return byName[hello.ServerName], nil // nil: Certificates[0]
	}
	return nil
}
