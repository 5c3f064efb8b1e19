//go:build integration

package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// vhostsScript drives real slixmpp clients against a two-node cluster serving
// a.example (internal accounts, registration allowed) and b.example (an
// ejabberd extauth script, registration denied), each host with its own
// certificate from a test CA. Arguments: CA file, then node1's and node2's
// STARTTLS and direct TLS ports.
const vhostsScript = `
import asyncio, ssl, sys, xmpptest as X

CA = sys.argv[1]
P1, T1, P2, T2 = (int(a) for a in sys.argv[2:6])

def client(j, pw, plugins=()):
    c = X.client(j, pw, plugins=list(plugins))
    # Verify for real: the certificate must chain to the test CA and name the
    # host, which is also the SNI name (slixmpp leaves both empty when given an
    # IP address to connect to, as here).
    c.ssl_context = ssl.create_default_context(cafile=CA)
    c.default_domain = c.boundjid.domain
    return c

async def login(j, pw, port, tls_port=0):
    c = client(j, pw)
    if tls_port:
        c.connect((X.HOST, tls_port), use_ssl=True, force_starttls=False)
    else:
        c.connect((X.HOST, port))
    f = X.future()
    c.add_event_handler("session_start", lambda _: f.done() or f.set_result(True))
    c.add_event_handler("failed_all_auth", lambda _: f.done() or f.set_exception(RuntimeError("auth failed for " + j)))
    c.add_event_handler("connection_failed", lambda e: f.done() or f.set_exception(RuntimeError("connection failed for %s: %s" % (j, e))))
    await asyncio.wait_for(f, 15)
    return c

def cert_name(c):
    cert = c.transport.get_extra_info("peercert")
    return dict(x[0] for x in cert["subject"])["commonName"]

async def refused(j, pw, port):
    try:
        c = await login(j, pw, port)
    except RuntimeError as e:
        if "auth failed" in str(e):
            return
        raise
    raise AssertionError("%s logged in with the other host's password" % j)

async def main():
    # Each host's certificate, chosen by SNI on direct TLS (XEP-0368) and by the
    # stream's host with STARTTLS, verified against the CA with the host's name.
    for j, pw in (("alice@a.example/t", "pa"), ("alice@b.example/t", "pb")):
        for port, tls_port in ((P1, T1), (P2, 0)):
            c = await login(j, pw, port, tls_port)
            host = j.split("@")[1].split("/")[0]
            assert cert_name(c) == host, "%s got the certificate of %s" % (j, cert_name(c))
            await X.stop(c)
    # Same localpart, different accounts, different backends.
    await refused("alice@a.example/x", "pb", P1)
    await refused("alice@b.example/x", "pa", P2)
    # carol registered in-band on a.example (by the Go test) logs in there, not on b.example.
    c = await login("carol@a.example/r", "pc", P2)
    await X.stop(c)
    await refused("carol@b.example/r", "pc", P2)
    # alice@a.example on node1 and alice@b.example on node2: subscriptions both
    # ways, presence and messages across hosts and nodes.
    a = await login("alice@a.example/n1", "pa", P1)
    b = await login("alice@b.example/n2", "pb", P2)
    a_sees_b = X.event(a, "presence_available", lambda p: p["from"].bare == "alice@b.example")
    b_sees_a = X.event(b, "presence_available", lambda p: p["from"].bare == "alice@a.example")
    a.send_presence(); b.send_presence()
    a.send_presence_subscription(pto="alice@b.example")  # b auto-authorizes and subscribes back
    await asyncio.wait_for(a_sees_b, 15)
    await asyncio.wait_for(b_sees_a, 15)
    for src, dst, to in ((a, b, "alice@b.example"), (b, a, "alice@a.example")):
        got = X.event(dst, "message", lambda m: m["body"] == "hi from " + str(src.boundjid))
        src.send_message(mto=to, mbody="hi from " + str(src.boundjid), mtype="chat")
        m = await asyncio.wait_for(got, 15)
        assert m["from"] == src.boundjid, "from %s" % m["from"]
    ra = await a.get_roster()
    rb = await b.get_roster()
    assert "alice@b.example" in a.client_roster and a.client_roster["alice@b.example"]["subscription"] == "both", a.client_roster
    assert "alice@a.example" in b.client_roster and b.client_roster["alice@a.example"]["subscription"] == "both", b.client_roster
    await X.stop(a); await X.stop(b)

X.run(main, timeout=90)
`

// TestVirtualHosts: one two-node cluster serves a.example and b.example
// (config hosts and host_config): different accounts of the same name with
// different backends and passwords, certificates by SNI, registration allowed
// on one host and refused (not-allowed) on the other, messages and presence
// subscriptions between the hosts' users across the nodes, and <host-unknown/>
// for a stream to a host not served.
func TestVirtualHosts(t *testing.T) {
	testenv.NeedSlixmpp(t)
	dir := t.TempDir()
	caFile, certs := vhostCerts(t, dir, "a.example", "b.example")
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:pb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("../auth/testdata/extauth.py")
	if err != nil {
		t.Fatal(err)
	}
	hostConfig := "{b.example: {auth_method: external, extauth_program: '" + testenv.Python + " " + script + " " + users +
		"', extauth_pool_size: 1, register: deny, certfile: " + certs["b.example"][0] + ", keyfile: " + certs["b.example"][1] + "}}"
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 2, Args: []string{
		"--hosts", "a.example,b.example", "--domain", "a.example", "--register", "allow",
		"--cert", certs["a.example"][0], "--key", certs["a.example"][1], "--host-config", hostConfig,
		"--c2s-tls", "127.0.0.1:0"}})
	n1, n2 := nodes[0], nodes[1]
	n1.Register(t, "alice", "pa") // the default host's internal accounts

	// A stream to a host not served: <host-unknown/>.
	c := testenv.Dial(t, n1.Addr())
	c.Send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='c.example' version='1.0'>")
	if got := c.Expect("</stream:stream>", 10*time.Second); !strings.Contains(got, "<host-unknown") {
		t.Fatalf("stream to c.example: %s", got)
	}
	// Registration on b.example: not offered, refused with not-allowed.
	c = testenv.Dial(t, n2.Addr())
	if f := c.StartTLS("b.example"); strings.Contains(f, "iq-register") {
		t.Fatalf("b.example offers registration: %s", f)
	}
	c.Send("<iq type='set' id='reg1'><query xmlns='jabber:iq:register'><username>carol</username><password>pc</password></query></iq>")
	if got := c.Expect("</iq>", 10*time.Second); !strings.Contains(got, "<not-allowed") {
		t.Fatalf("registration on b.example: %s", got)
	}
	// On a.example: offered and done (carol logs in with slixmpp below).
	c = testenv.Dial(t, n1.Addr())
	if f := c.StartTLS("a.example"); !strings.Contains(f, "iq-register") {
		t.Fatalf("a.example does not offer registration: %s", f)
	}
	c.Send("<iq type='set' id='reg2'><query xmlns='jabber:iq:register'><username>carol</username><password>pc</password></query></iq>")
	if got := c.Expect("id='reg2'", 10*time.Second); !strings.Contains(got, "type='result'") {
		t.Fatalf("registration on a.example: %s", got)
	}

	start := time.Now()
	out := n1.RunPython(t, 100*time.Second, vhostsScript, caFile,
		strconv.Itoa(n1.Port), strconv.Itoa(n1.TLSPort), strconv.Itoa(n2.Port), strconv.Itoa(n2.TLSPort))
	t.Logf("slixmpp script: %.1fs", time.Since(start).Seconds())
	if !strings.Contains(out, "PASS") {
		t.Fatalf("script:\n%s\n--- node1 ---\n%s\n--- node2 ---\n%s", out, n1.Logs(), n2.Logs())
	}
	// Each host's backend is its own: the extauth script ran for b.example only.
	for _, n := range nodes {
		if !strings.Contains(n.Logs(), "host=b.example") {
			t.Errorf("%s: no log line of b.example's backend:\n%s", n.Name, n.Logs())
		}
	}
}

// vhostCerts writes a test CA and, for each host, a certificate it signed
// (certificate and key files by host).
func vhostCerts(t *testing.T, dir string, hosts ...string) (caFile string, out map[string][2]string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "xedge test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	caFile = filepath.Join(dir, "ca.pem")
	writePEM(t, caFile, "CERTIFICATE", caDER)
	out = map[string][2]string{}
	for i, h := range hosts {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: h},
			DNSNames: []string{h}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(key)
		cf, kf := filepath.Join(dir, h+".pem"), filepath.Join(dir, h+".key")
		writePEM(t, cf, "CERTIFICATE", der)
		writePEM(t, kf, "PRIVATE KEY", kder)
		out[h] = [2]string{cf, kf}
	}
	return caFile, out
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
