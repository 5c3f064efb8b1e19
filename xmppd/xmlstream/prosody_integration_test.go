//go:build integration

package xmlstream

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// startProsody runs Debian's prosody on a loopback port with a throwaway config and a
// self-signed certificate for localhost, and returns its c2s address.
func startProsody(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("prosody")
	if err != nil {
		t.Fatal("prosody is not installed (Debian package prosody; build/setup.sh test installs it): " + err.Error())
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "localhost.crt"), filepath.Join(dir, "localhost.key")
	writeSelfSigned(t, certFile, keyFile)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := fmt.Sprintf(`pidfile = %[1]q
data_path = %[2]q
run_as_root = true
daemonize = false
log = { debug = %[3]q, error = "*stderr" }
c2s_ports = { %[4]d }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = { }
https_ports = { }
c2s_require_encryption = false
allow_unencrypted_plain_auth = false
modules_enabled = { "disco", "roster", "saslauth", "tls", "ping" }
authentication = "internal_hashed"
ssl = { certificate = %[5]q, key = %[6]q }
Host "localhost"
`, filepath.Join(dir, "prosody.pid"), dir, filepath.Join(dir, "prosody.log"), port, certFile, keyFile)
	cfgFile := filepath.Join(dir, "prosody.cfg.lua")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd := exec.Command(bin, "--config", cfgFile)
	cmd.Dir = dir
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "prosody.log"))
			t.Logf("prosody stderr:\n%s\nprosody log (tail):\n%s", stderr.String(), tail(string(log), 3000))
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("prosody did not listen on %s: %v\n%s", addr, err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lockedBuffer collects a child's output; exec writes to it from its own goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestProsodyStream talks to a real XMPP server with our encoder and decoder: stream
// header, features, an error reply, STARTTLS with Reset onto the TLS connection, the
// restarted stream, and the server's </stream:stream>. It runs once on the plain
// connection and once reading the server's bytes one at a time.
func TestProsodyStream(t *testing.T) {
	addr := startProsody(t)
	for _, oneByte := range []bool{false, true} {
		t.Run(fmt.Sprintf("oneByte=%v", oneByte), func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			wrap := func(r io.Reader) io.Reader {
				if oneByte {
					return iotest.OneByteReader(r)
				}
				return r
			}
			send := func(b []byte) {
				t.Helper()
				if _, err := conn.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			hdr := AppendStreamHeader(nil, NSClient, Attr{Local: "to", Value: "localhost"}, Attr{Local: "version", Value: "1.0"}, Attr{Space: NSXML, Local: "lang", Value: "en"})
			send(hdr)
			d := NewDecoder(wrap(conn), DefaultLimits())
			h, err := d.StreamHeader()
			if err != nil {
				t.Fatal(err)
			}
			if h.Attr("from") != "localhost" || h.Attr("id") == "" || h.Attr("version") != "1.0" || d.DefaultNS() != NSClient {
				t.Fatalf("server header %s, default namespace %q", dump(h), d.DefaultNS())
			}
			next := func() *Element {
				t.Helper()
				e, err := d.Next()
				if err != nil {
					t.Fatal(err)
				}
				return e
			}
			f := next()
			if f.Space != NSStream || f.Local != "features" || f.Child("urn:ietf:params:xml:ns:xmpp-tls", "starttls") == nil ||
				f.Child("urn:ietf:params:xml:ns:xmpp-sasl", "mechanisms") == nil {
				t.Fatalf("features: %s", dump(f))
			}
			// A stanza before authentication comes back as an error.
			send(AppendElement(nil, New(NSClient, "presence", "id", "p1"), NSClient))
			if e := next(); e.Local != "presence" || e.Attr("type") != "error" ||
				e.Child(NSClient, "error").Child("urn:ietf:params:xml:ns:xmpp-stanzas", "service-unavailable") == nil {
				t.Fatalf("error reply: %s", dump(e))
			}
			send(AppendElement(nil, New("urn:ietf:params:xml:ns:xmpp-tls", "starttls"), NSClient))
			if e := next(); e.Local != "proceed" || e.Space != "urn:ietf:params:xml:ns:xmpp-tls" {
				t.Fatalf("starttls reply: %s", dump(e))
			}
			tc := tls.Client(conn, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			d.Reset(wrap(tc))
			if _, err := tc.Write(hdr); err != nil {
				t.Fatal(err)
			}
			if h, err = d.StreamHeader(); err != nil {
				t.Fatal(err)
			}
			f = next()
			mechs := f.Child("urn:ietf:params:xml:ns:xmpp-sasl", "mechanisms")
			if f.Local != "features" || mechs == nil || f.Child("urn:ietf:params:xml:ns:xmpp-tls", "starttls") != nil {
				t.Fatalf("features after TLS: %s", dump(f))
			}
			var names []string
			for _, m := range mechs.Children() {
				names = append(names, m.Text())
			}
			if !strings.Contains(strings.Join(names, " "), "PLAIN") {
				t.Errorf("no PLAIN over TLS: %v", names)
			}
			// Whitespace keepalive, then we close: the server answers with its close tag.
			before := d.InputOffset()
			if _, err := tc.Write([]byte(" \n" + StreamClose)); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Next(); err != io.EOF {
				var xe *Error
				if errors.As(err, &xe) {
					t.Fatalf("server close: stream error %v", xe)
				}
				t.Fatalf("server close: %v", err)
			}
			if d.InputOffset() <= before {
				t.Errorf("InputOffset did not advance over the server's close tag")
			}
		})
	}
}
