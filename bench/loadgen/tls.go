package loadgen

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// baseTLS is the template of every client TLS configuration: session tickets are
// off so each login pays a full handshake, and the key exchanges offered are Go's
// default list unless SetCurvePreferences narrowed them.
var (
	tlsMu    sync.Mutex
	curves   []tls.CurveID
	tlsCache sync.Map // tlsKey -> *tls.Config, built once per (domain, verifier)
)

type tlsKey struct {
	domain string
	v      *Verifier
}

// SetCurvePreferences restricts the key exchanges every later connection offers
// (nil: Go's default list). Call it before any connection is made.
func SetCurvePreferences(c []tls.CurveID) {
	tlsMu.Lock()
	defer tlsMu.Unlock()
	curves = c
	tlsCache.Clear()
}

// clientTLS returns the shared configuration for domain and v: one per run and
// server, not a Clone per login (cloning a tls.Config per handshake was measurable
// work on the generator's one core).
func clientTLS(domain string, v *Verifier) *tls.Config {
	k := tlsKey{domain, v}
	if c, ok := tlsCache.Load(k); ok {
		return c.(*tls.Config)
	}
	tlsMu.Lock()
	defer tlsMu.Unlock()
	c := &tls.Config{
		ServerName:             domain,
		SessionTicketsDisabled: true,
		MinVersion:             tls.VersionTLS12,
		CurvePreferences:       curves,
		// Go's own chain verification would run per handshake; the Verifier does
		// it once and then pins the leaf (see Verifier).
		InsecureSkipVerify: true,
	}
	if v != nil {
		c.VerifyConnection = v.verify
	}
	tlsCache.Store(k, c)
	return c
}

// Verifier checks the server's certificate honestly but cheaply: the first
// handshake's chain is verified in full (crypto/x509 against the harness's own
// trust roots, host name included); its leaf's DER bytes are then pinned, and
// every later handshake must present exactly those bytes. A server that presents
// any other certificate goes through full verification again (and is pinned only
// if it passes). The TLS handshake itself still verifies the server's signature
// over the transcript with the leaf's key on every connection, so a peer without
// the pinned certificate's private key cannot complete a handshake.
type Verifier struct {
	roots    *x509.CertPool
	host     string
	pinned   atomic.Pointer[[]byte]
	full     atomic.Int64 // full chain verifications done
	verified atomic.Int64 // handshakes accepted
}

// NewVerifier trusts the PEM certificates in rootsPEM (the harness's CA or the
// server's self-signed certificate) for host.
func NewVerifier(rootsPEM []byte, host string) (*Verifier, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootsPEM) {
		return nil, errors.New("tls trust: no certificate in PEM")
	}
	return &Verifier{roots: pool, host: host}, nil
}

// FullVerifications reports how many handshakes needed a full chain verification
// (1 per server when pinning works) and Accepted how many were accepted in all.
func (v *Verifier) FullVerifications() int64 { return v.full.Load() }

// Accepted reports how many handshakes passed verification.
func (v *Verifier) Accepted() int64 { return v.verified.Load() }

func (v *Verifier) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if p := v.pinned.Load(); p != nil && bytes.Equal(*p, leaf.Raw) {
		v.verified.Add(1)
		return nil
	}
	v.full.Add(1)
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, DNSName: v.host}); err != nil {
		return fmt.Errorf("tls: server certificate: %w", err)
	}
	raw := bytes.Clone(leaf.Raw)
	v.pinned.Store(&raw)
	v.verified.Add(1)
	return nil
}

// SetTLSGroups sets the key exchanges by the harness's --tls-groups name:
// "default" (Go's list: X25519MLKEM768, X25519, P-256, ...) or "x25519".
func SetTLSGroups(name string) error {
	switch name {
	case "default":
		SetCurvePreferences(nil)
	case "x25519":
		SetCurvePreferences([]tls.CurveID{tls.X25519})
	default:
		return fmt.Errorf("tls groups %q: want default or x25519", name)
	}
	return nil
}
