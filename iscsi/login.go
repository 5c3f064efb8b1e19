package iscsi

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Login stages (RFC 7143 §11.12.3).
const (
	stageSecurity    = 0
	stageOperational = 1
	stageFullFeature = 3
)

var (
	// ErrAuth means the target refused our credentials, or (mutual CHAP) failed
	// to prove its own.
	ErrAuth = errors.New("iscsi: authentication failed")
	// ErrTargetNotFound means the target does not know the requested IQN.
	ErrTargetNotFound = errors.New("iscsi: target not found")
)

// LoginError is a login refused with a status other than authentication or
// not-found. Class 3 (target error) is worth retrying.
type LoginError struct {
	Class, Detail byte
}

func (e *LoginError) Error() string {
	return fmt.Sprintf("iscsi: login refused: status class %d detail %#02x", e.Class, e.Detail)
}

// redirectError is a login answered with a redirection to another portal.
type redirectError struct{ addr string }

func (e *redirectError) Error() string { return "iscsi: login redirected to " + e.addr }

// sessionID identifies a session across its connections and re-logins.
type sessionID struct {
	isid      [6]byte
	tsih      uint16 // 0 for a new session (or a reinstatement)
	cmdSN     uint32 // the next CmdSN
	discovery bool
}

func newISID() [6]byte {
	var b [6]byte
	rand.Read(b[:])
	b[0] = 0x80 | (b[0] & 0x3f) // type 10b: random (RFC 7143 §11.12.5)
	return b
}

// loginResult is what a successful login established.
type loginResult struct {
	params    params
	tsih      uint16
	expStatSN uint32
	expCmdSN  uint32
	maxCmdSN  uint32
	alias     string
}

// loginConn drives the login phase on a fresh connection. It reads and writes
// synchronously; every step has its own deadline.
type loginConn struct {
	nc      net.Conn
	cfg     *Config
	sid     *sessionID
	r       *pduReader
	itt     uint32
	statSN  uint32
	haveSN  bool
	expCmd  uint32
	maxCmd  uint32
	tsih    uint16
	timeout time.Duration
}

func (l *loginConn) roundTrip(keys []kv, transit bool, csg, nsg byte) (*pdu, []kv, error) {
	req := &pdu{}
	req.bhs[0] = flagImmed | opLoginReq
	f := csg << 2
	if transit {
		f |= 0x80 | nsg
	}
	req.bhs[1] = f
	copy(req.bhs[8:14], l.sid.isid[:])
	binary.BigEndian.PutUint16(req.bhs[14:16], l.sid.tsih)
	req.setITT(l.itt)
	req.put32(24, l.sid.cmdSN)
	req.put32(28, l.statSN+1)
	if !l.haveSN {
		req.put32(28, 0)
	}
	req.data = encodeText(keys)
	if len(req.data) > loginMaxData {
		return nil, nil, fmt.Errorf("iscsi: login keys exceed %d bytes", loginMaxData)
	}
	l.nc.SetDeadline(time.Now().Add(l.timeout))
	var w pduWriter
	w.add(req)
	if err := w.flush(l.nc); err != nil {
		return nil, nil, fmt.Errorf("iscsi: login: %w", err)
	}
	resp, err := l.r.read()
	if err != nil {
		return nil, nil, fmt.Errorf("iscsi: login: %w", err)
	}
	if resp.opcode() != opLoginResp {
		return nil, nil, fmt.Errorf("%w: login answered with opcode %#02x", ErrProtocol, resp.opcode())
	}
	if resp.itt() != l.itt {
		return nil, nil, fmt.Errorf("%w: login response tag %#x, sent %#x", ErrProtocol, resp.itt(), l.itt)
	}
	l.statSN, l.haveSN = resp.u32(24), true
	l.expCmd, l.maxCmd = resp.u32(28), resp.u32(32)
	if cls, det := resp.bhs[36], resp.bhs[37]; cls != 0 {
		kvs, _ := parseText(resp.data)
		switch {
		case cls == 1:
			for _, p := range kvs {
				if p.k == "TargetAddress" {
					return nil, nil, &redirectError{addr: p.v}
				}
			}
			return nil, nil, fmt.Errorf("%w: redirection without TargetAddress", ErrProtocol)
		case cls == 2 && (det == 1 || det == 2):
			return nil, nil, fmt.Errorf("%w: target refused the login (detail %#02x)", ErrAuth, det)
		case cls == 2 && (det == 3 || det == 4):
			return nil, nil, fmt.Errorf("%w: %s", ErrTargetNotFound, l.cfg.Target)
		}
		return nil, nil, &LoginError{Class: cls, Detail: det}
	}
	if v := resp.bhs[3]; v != 0 {
		return nil, nil, fmt.Errorf("%w: login version-active %d", ErrProtocol, v)
	}
	if resp.flags()&0x40 != 0 {
		return nil, nil, fmt.Errorf("%w: login response continuation is not supported", ErrProtocol)
	}
	kvs, err := parseText(resp.data)
	if err != nil {
		return nil, nil, err
	}
	l.tsih = binary.BigEndian.Uint16(resp.bhs[14:16])
	return resp, kvs, nil
}

func respTransit(p *pdu) (transit bool, csg, nsg byte) {
	f := p.flags()
	return f&0x80 != 0, (f >> 2) & 3, f & 3
}

// login runs the whole login phase: security (CHAP or none), then operational
// negotiation, into the full feature phase.
func login(nc net.Conn, cfg *Config, sid *sessionID) (*loginResult, error) {
	l := &loginConn{nc: nc, cfg: cfg, sid: sid, r: newPDUReader(nc, loginMaxData), timeout: cfg.TaskTimeout}
	var itt [4]byte
	rand.Read(itt[:])
	l.itt = binary.BigEndian.Uint32(itt[:]) &^ 0x80000000
	defer nc.SetDeadline(time.Time{})

	first := []kv{{"InitiatorName", cfg.InitiatorName}}
	if sid.discovery {
		first = append(first, kv{"SessionType", "Discovery"})
	} else {
		first = append(first, kv{"SessionType", "Normal"}, kv{"TargetName", cfg.Target})
	}
	res := &loginResult{}
	useCHAP := cfg.User != ""
	var (
		resp *pdu
		kvs  []kv
		err  error
	)
	if !useCHAP {
		resp, kvs, err = l.roundTrip(append(first, kv{"AuthMethod", "None"}), true, stageSecurity, stageOperational)
		if err != nil {
			return nil, err
		}
		for _, p := range kvs {
			if p.k == "AuthMethod" && p.v != "None" {
				return nil, fmt.Errorf("%w: target requires AuthMethod=%s and no credentials are configured", ErrAuth, p.v)
			}
		}
		collectInfo(res, kvs)
		t, _, nsg := respTransit(resp)
		if !t {
			// The target wants to go on in the security stage: it wants credentials.
			return nil, fmt.Errorf("%w: target did not accept AuthMethod=None", ErrAuth)
		}
		if nsg == stageFullFeature {
			return l.finish(res, newNegotiation(cfg, sid.discovery))
		}
	} else {
		if err := l.chap(first, res); err != nil {
			return nil, err
		}
	}
	return l.operational(res)
}

func collectInfo(res *loginResult, kvs []kv) {
	for _, p := range kvs {
		if p.k == "TargetAlias" {
			res.alias = p.v
		}
	}
}

func (l *loginConn) operational(res *loginResult) (*loginResult, error) {
	neg := newNegotiation(l.cfg, l.sid.discovery)
	keys := neg.keys()
	for round := 0; ; round++ {
		if round >= 16 {
			return nil, fmt.Errorf("%w: operational negotiation did not converge", ErrProtocol)
		}
		resp, kvs, err := l.roundTrip(keys, true, stageOperational, stageFullFeature)
		if err != nil {
			return nil, err
		}
		collectInfo(res, kvs)
		reply, err := neg.handle(kvs)
		if err != nil {
			return nil, err
		}
		t, csg, nsg := respTransit(resp)
		if t && nsg == stageFullFeature && csg == stageOperational {
			return l.finish(res, neg)
		}
		keys = reply
	}
}

func (l *loginConn) finish(res *loginResult, neg *negotiation) (*loginResult, error) {
	p, err := neg.done()
	if err != nil {
		return nil, err
	}
	if l.cfg.HeaderDigest && !p.HeaderDigest || l.cfg.DataDigest && !p.DataDigest {
		return nil, fmt.Errorf("%w: target refused CRC32C digests", ErrProtocol)
	}
	if l.tsih == 0 && !l.sid.discovery {
		return nil, fmt.Errorf("%w: final login response has TSIH 0", ErrProtocol)
	}
	res.params = p
	res.tsih = l.tsih
	res.expStatSN = l.statSN + 1
	res.expCmdSN, res.maxCmdSN = l.expCmd, l.maxCmd
	return res, nil
}

// chap runs the security stage with CHAP (RFC 7143 §12.1.3, RFC 1994), mutual
// when a target secret is configured.
func (l *loginConn) chap(first []kv, res *loginResult) error {
	cfg := l.cfg
	_, kvs, err := l.roundTrip(append(first, kv{"AuthMethod", "CHAP"}), false, stageSecurity, 0)
	if err != nil {
		return err
	}
	collectInfo(res, kvs)
	if v := lookup(kvs, "AuthMethod"); v != "CHAP" {
		return fmt.Errorf("%w: target answered AuthMethod=%q to CHAP", ErrAuth, v)
	}
	_, kvs, err = l.roundTrip([]kv{{"CHAP_A", "5"}}, false, stageSecurity, 0)
	if err != nil {
		return err
	}
	if v := lookup(kvs, "CHAP_A"); v != "5" {
		return fmt.Errorf("%w: target chose CHAP_A=%q (only MD5, 5, is supported)", ErrAuth, v)
	}
	idStr, chal := lookup(kvs, "CHAP_I"), lookup(kvs, "CHAP_C")
	id, err := strconv.Atoi(idStr)
	if err != nil || id < 0 || id > 255 {
		return fmt.Errorf("%w: CHAP_I=%q", ErrProtocol, idStr)
	}
	c, err := decodeCHAPBinary(chal)
	if err != nil || len(c) == 0 || len(c) > 1024 {
		return fmt.Errorf("%w: CHAP_C=%q", ErrProtocol, clip([]byte(chal)))
	}
	keys := []kv{{"CHAP_N", cfg.User}, {"CHAP_R", "0x" + hex.EncodeToString(chapResponse(byte(id), cfg.Secret, c))}}
	mutual := cfg.TargetSecret != ""
	var myID byte
	var myChal []byte
	if mutual {
		var b [17]byte
		rand.Read(b[:])
		myID, myChal = b[0], b[1:]
		if subtle.ConstantTimeCompare(myChal, c) == 1 {
			myChal[0] ^= 0xff
		}
		keys = append(keys, kv{"CHAP_I", strconv.Itoa(int(myID))}, kv{"CHAP_C", "0x" + hex.EncodeToString(myChal)})
	}
	resp, kvs, err := l.roundTrip(keys, true, stageSecurity, stageOperational)
	if err != nil {
		return err
	}
	collectInfo(res, kvs)
	if mutual {
		n, r := lookup(kvs, "CHAP_N"), lookup(kvs, "CHAP_R")
		if r == "" {
			return fmt.Errorf("%w: target did not answer our CHAP challenge", ErrAuth)
		}
		got, err := decodeCHAPBinary(r)
		if err != nil {
			return fmt.Errorf("%w: CHAP_R=%q", ErrAuth, clip([]byte(r)))
		}
		if cfg.TargetUser != "" && n != cfg.TargetUser {
			return fmt.Errorf("%w: target calls itself %q, want %q", ErrAuth, n, cfg.TargetUser)
		}
		if subtle.ConstantTimeCompare(got, chapResponse(myID, cfg.TargetSecret, myChal)) != 1 {
			return fmt.Errorf("%w: target's CHAP response is wrong", ErrAuth)
		}
	}
	t, _, nsg := respTransit(resp)
	if !t || nsg != stageOperational {
		return fmt.Errorf("%w: target did not leave the security stage after CHAP", ErrAuth)
	}
	return nil
}

func lookup(kvs []kv, k string) string {
	for _, p := range kvs {
		if p.k == k {
			return p.v
		}
	}
	return ""
}

func chapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// decodeCHAPBinary decodes an RFC 7143 binary value: 0x... hex or 0b... base64.
func decodeCHAPBinary(v string) ([]byte, error) {
	switch {
	case strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X"):
		s := v[2:]
		if len(s)%2 == 1 {
			s = "0" + s
		}
		return hex.DecodeString(s)
	case strings.HasPrefix(v, "0b") || strings.HasPrefix(v, "0B"):
		return base64.StdEncoding.DecodeString(v[2:])
	}
	return nil, fmt.Errorf("not a binary value")
}
