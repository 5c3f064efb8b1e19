package s2s

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"xedge/xmppd/xmlstream"
)

// stream is one TCP connection carrying jabber:server streams (restarted after
// STARTTLS and SASL), used by both directions.
type stream struct {
	s         *Server
	nc        net.Conn // the TLS connection once TLS is on
	dec       *xmlstream.Decoder
	tls       bool
	bidi      bool // we asked for a bidirectional stream (XEP-0288)
	peerCerts []*x509.Certificate
	local     string // outgoing: our originating domain (its certificate is our client certificate)

	wmu sync.Mutex
}

func newStream(s *Server, nc net.Conn) *stream {
	c := &stream{s: s, nc: nc}
	c.reset()
	return c
}

// reset starts a new XML stream on the connection (after TLS or SASL).
func (c *stream) reset() {
	c.dec = xmlstream.NewDecoder(bufio.NewReaderSize(c.nc, 4096), c.s.cfg.Limits)
}

func (c *stream) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

func (c *stream) writeEl(e *xmlstream.Element) error {
	return c.write(xmlstream.AppendElement(nil, e, NSServer))
}

// writeHeader opens our side of a stream: jabber:server with the dialback prefix
// declared (RFC 6120 §4.7, XEP-0220 §2.1), version 1.0.
func (c *stream) writeHeader(from, to, id string) error {
	var attrs []xmlstream.Attr
	if from != "" {
		attrs = append(attrs, xmlstream.Attr{Local: "from", Value: from})
	}
	if to != "" {
		attrs = append(attrs, xmlstream.Attr{Local: "to", Value: to})
	}
	if id != "" {
		attrs = append(attrs, xmlstream.Attr{Local: "id", Value: id})
	}
	attrs = append(attrs, xmlstream.Attr{Local: "version", Value: "1.0"})
	b := xmlstream.AppendStreamHeader(nil, NSServer, attrs...)
	b = append(b[:len(b)-1], " xmlns:db='"+NSDialback+"'>"...)
	return c.write(b)
}

// streamError writes a stream error and the stream's end.
func (c *stream) streamError(cond, text string) {
	var b []byte
	if cond != "" {
		e := xmlstream.New(xmlstream.NSStream, "error")
		e.Append(xmlstream.New(nsStreams, cond))
		if text != "" {
			e.Append(xmlstream.New(nsStreams, "text").AppendText(text))
		}
		b = xmlstream.AppendElement(b, e, NSServer)
	}
	b = append(b, xmlstream.StreamClose...)
	c.write(b)
}

// startTLSClient runs the client side of TLS towards domain. The certificate is
// checked here, not by crypto/tls: a certificate that does not verify still
// allows dialback (unless SecureAuth).
func (c *stream) startTLSClient(ctx context.Context, domain string, direct bool) error {
	cfg := &tls.Config{ServerName: domain, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if g := c.s.cfg.TLS.GetCertificate; g != nil && c.local != "" {
				// A virtual host's certificate, chosen as for an SNI name.
				if cert, err := g(&tls.ClientHelloInfo{ServerName: c.local}); err == nil && cert != nil {
					return cert, nil
				}
			}
			if certs := c.s.cfg.TLS.Certificates; len(certs) > 0 {
				return &certs[0], nil
			}
			return &tls.Certificate{}, nil
		}}
	if direct {
		cfg.NextProtos = []string{"xmpp-server"}
	}
	tc := tls.Client(c.nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.nc, c.tls = tc, true
	c.peerCerts = tc.ConnectionState().PeerCertificates
	c.reset()
	return nil
}

// startTLSServer runs the server side of TLS, asking for (not requiring) the
// peer's certificate for SASL EXTERNAL.
func (c *stream) startTLSServer(ctx context.Context) error {
	cfg := c.s.cfg.TLS.Clone()
	cfg.ClientAuth = tls.RequestClientCert
	cfg.NextProtos = nil
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	tc := tls.Server(c.nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.nc, c.tls = tc, true
	c.peerCerts = tc.ConnectionState().PeerCertificates
	c.reset()
	return nil
}

// writeDB writes a dialback element with the db: prefix the stream header
// declares: some servers (ejabberd) match the prefixed name literally and ignore
// <result xmlns='jabber:server:dialback'/>. attrs are name/value pairs; inner is
// the text (escaped here) or, with raw, markup.
func (c *stream) writeDB(local string, inner string, raw bool, attrs ...string) error {
	var b strings.Builder
	b.WriteString("<db:" + local)
	for i := 0; i+1 < len(attrs); i += 2 {
		b.WriteString(" " + attrs[i] + "='")
		xml.EscapeText(&b, []byte(attrs[i+1]))
		b.WriteString("'")
	}
	if inner == "" {
		b.WriteString("/>")
		return c.write([]byte(b.String()))
	}
	b.WriteString(">")
	if raw {
		b.WriteString(inner)
	} else {
		xml.EscapeText(&b, []byte(inner))
	}
	b.WriteString("</db:" + local + ">")
	return c.write([]byte(b.String()))
}

// DialbackKey is the dialback key of XEP-0185: hex(HMAC-SHA256(SHA256(secret),
// receiving + " " + originating + " " + streamID)).
func DialbackKey(secret []byte, receiving, originating, streamID string) string {
	k := sha256.Sum256(secret)
	m := hmac.New(sha256.New, []byte(hex.EncodeToString(k[:])))
	m.Write([]byte(receiving + " " + originating + " " + streamID))
	return hex.EncodeToString(m.Sum(nil))
}

func streamID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hasMechanism reports whether features offer SASL mechanism mech.
func hasMechanism(feats *xmlstream.Element, mech string) bool {
	if feats == nil {
		return false
	}
	ms := feats.Child(NSSASL, "mechanisms")
	if ms == nil {
		return false
	}
	for _, m := range ms.Children() {
		if m.Local == "mechanism" && m.Text() == mech {
			return true
		}
	}
	return false
}
