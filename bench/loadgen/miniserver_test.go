package loadgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"
)

// miniServer is the smallest XMPP server a benchmark login needs, for measuring the
// load generator on its own: STARTTLS (required; full handshakes, no tickets),
// SCRAM-SHA-1 with precomputed keys, bind, presence (ignored), ping, close. It
// does as little work per login as a server can, so a benchmark against it shows
// the generator's own cost.
type miniServer struct {
	ln      net.Listener
	tlsConf *tls.Config
	certPEM []byte
	salt    []byte
	keys    sync.Map // password -> [2][]byte{storedKey, serverKey}
	wg      sync.WaitGroup
	// fanout: after login a connection stays, joined to one room; a message
	// it sends goes to every joined connection (see mucfloor_test.go).
	fanout bool
	rmu    sync.Mutex
	room   []roomConn
}

type roomConn struct {
	jid string
	c   net.Conn
}

// testCert makes a self-signed ECDSA P-256 certificate for domain, like the
// harness's (bench/servers/cert.go).
func testCert(domain string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: domain},
		DNSNames:     []string{domain},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// startMiniServer listens on a loopback port and serves until ln is closed.
func startMiniServer(domain string) (*miniServer, error) {
	cert, certPEM, err := testCert(domain)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &miniServer{ln: ln, certPEM: certPEM, salt: []byte("mini-salt"),
		tlsConf: &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() { defer s.wg.Done(); defer nc.Close(); s.serve(nc, domain) }()
		}
	}()
	return s, nil
}

func (s *miniServer) Close() { s.ln.Close(); s.wg.Wait() }

func (s *miniServer) keysFor(pass string) [2][]byte {
	if v, ok := s.keys.Load(pass); ok {
		return v.([2][]byte)
	}
	salted, _ := pbkdf2.Key(sha1.New, pass, s.salt, 4096, 20)
	ck := hmacSHA1(salted, "Client Key")
	stored := sha1.Sum(ck)
	k := [2][]byte{stored[:], hmacSHA1(salted, "Server Key")}
	s.keys.Store(pass, k)
	return k
}

func hmacSHA1(k []byte, m string) []byte {
	h := hmac.New(sha1.New, k)
	h.Write([]byte(m))
	return h.Sum(nil)
}

// serve runs one login; any protocol error just closes the connection.
func (s *miniServer) serve(nc net.Conn, domain string) {
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	var conn net.Conn = nc
	sc := NewScanner(nc)
	send := func(x string) bool { _, err := conn.Write([]byte(x)); return err == nil }
	next := func() []byte { el, _ := sc.Next(); return el }
	hdr := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='m1' from='" + domain + "' version='1.0'>"
	if next() == nil || !send(hdr+"<stream:features><starttls xmlns='"+nsTLS+"'><required/></starttls></stream:features>") {
		return
	}
	if string(Name(next())) != "starttls" || !send("<proceed xmlns='"+nsTLS+"'/>") {
		return
	}
	tc := tls.Server(nc, s.tlsConf)
	if tc.Handshake() != nil {
		return
	}
	conn = tc
	sc.Reset(tc)
	if next() == nil || !send(hdr+"<stream:features><mechanisms xmlns='"+nsSASL+"'><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>") {
		return
	}
	cf, err := base64.StdEncoding.DecodeString(Text(next()))
	if err != nil {
		return
	}
	bare := strings.TrimPrefix(string(cf), "n,,")
	user, cnonce := "", ""
	for _, f := range strings.Split(bare, ",") {
		if v, ok := strings.CutPrefix(f, "n="); ok {
			user = v
		} else if v, ok := strings.CutPrefix(f, "r="); ok {
			cnonce = v
		}
	}
	k := s.keysFor("pw" + strings.TrimLeft(user, "abcdefghijklmnopqrstuvwxyz"))
	sf := "r=" + cnonce + "mini,s=" + base64.StdEncoding.EncodeToString(s.salt) + ",i=4096"
	if !send("<challenge xmlns='" + nsSASL + "'>" + base64.StdEncoding.EncodeToString([]byte(sf)) + "</challenge>") {
		return
	}
	cfin, err := base64.StdEncoding.DecodeString(Text(next()))
	if err != nil {
		return
	}
	i := strings.Index(string(cfin), ",p=")
	if i < 0 {
		return
	}
	am := bare + "," + sf + "," + string(cfin[:i])
	proof, err := base64.StdEncoding.DecodeString(string(cfin[i+3:]))
	sig := hmacSHA1(k[0], am)
	if err != nil || len(proof) != len(sig) {
		return
	}
	for j := range proof {
		proof[j] ^= sig[j]
	}
	if got := sha1.Sum(proof); !hmac.Equal(got[:], k[0]) {
		send("<failure xmlns='" + nsSASL + "'><not-authorized/></failure>")
		return
	}
	v := base64.StdEncoding.EncodeToString(hmacSHA1(k[1], am))
	if !send("<success xmlns='" + nsSASL + "'>" + base64.StdEncoding.EncodeToString([]byte("v="+v)) + "</success>") {
		return
	}
	sc.Restart()
	if next() == nil || !send(hdr+"<stream:features><bind xmlns='"+nsBind+"'/></stream:features>") {
		return
	}
	bind := next()
	if !send("<iq type='result' id='" + string(Attr(bind, "id")) + "'><bind xmlns='" + nsBind + "'><jid>" + user + "@" + domain + "/bench</jid></bind></iq>") {
		return
	}
	if s.fanout {
		s.serveRoom(conn, sc, user+"@"+domain+"/bench")
		return
	}
	for range 10 { // presence, then the ping; then the client's </stream:stream>
		el := next()
		if el == nil {
			return
		}
		if string(Name(el)) == "iq" {
			send("<iq type='result' id='" + string(Attr(el, "id")) + "'/>")
		}
	}
}
