package iscsi

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// seedPDUs returns a few valid target PDUs, framed.
func seedPDUs(dg digests) [][]byte {
	mk := func(op, flags byte, itt uint32, data []byte, f func(p *pdu)) []byte {
		p := &pdu{}
		p.bhs[0], p.bhs[1] = op, flags
		p.setITT(itt)
		p.data = data
		p.put32(28, 1)
		p.put32(32, 64)
		if f != nil {
			f(p)
		}
		var buf bytes.Buffer
		w := pduWriter{dg: dg}
		w.add(p)
		w.flush(&buf)
		return buf.Bytes()
	}
	return [][]byte{
		mk(opDataIn, flagFinal|0x01, 1, make([]byte, 512), nil),
		mk(opDataIn, 0, 1, make([]byte, 100), nil),
		mk(opR2T, flagFinal, 2, nil, func(p *pdu) { p.put32(44, 4096); p.put32(20, 9) }),
		mk(opSCSIResp, flagFinal, 2, []byte{0, 18, 0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0}, func(p *pdu) { p.bhs[3] = 2 }),
		mk(opNOPIn, flagFinal, 3, nil, nil),
		mk(opNOPIn, flagFinal, reservedTag, nil, func(p *pdu) { p.put32(20, 5) }),
		mk(opReject, flagFinal, reservedTag, make([]byte, 48), nil),
		mk(opAsync, flagFinal, reservedTag, nil, func(p *pdu) { p.bhs[36] = 4 }),
		mk(opLoginResp, 0x87, 0, encodeText([]kv{{"HeaderDigest", "None"}, {"MaxRecvDataSegmentLength", "8192"}}), nil),
		mk(opTextResp, flagFinal, 7, encodeText([]kv{{"TargetName", "iqn.x"}, {"TargetAddress", "1.2.3.4:3260,1"}}), nil),
	}
}

type nopConn struct{ net.Conn }

func (nopConn) Write(b []byte) (int, error)       { return len(b), nil }
func (nopConn) Close() error                      { return nil }
func (nopConn) SetWriteDeadline(time.Time) error  { return nil }
func (nopConn) SetDeadline(time.Time) error       { return nil }
func (nopConn) SetReadDeadline(t time.Time) error { return nil }
func (nopConn) Read(b []byte) (int, error)        { return 0, io.EOF }
func (nopConn) RemoteAddr() net.Addr              { return &net.TCPAddr{} }
func (nopConn) LocalAddr() net.Addr               { return &net.TCPAddr{} }

// FuzzTargetPDUs feeds an arbitrary byte stream from the "target" through the
// PDU reader and the connection's dispatcher, with a read, a write and a ping
// outstanding. Nothing may panic (an out-of-bounds copy would).
func FuzzTargetPDUs(f *testing.F) {
	for _, dg := range []digests{{}, {true, true}} {
		var all []byte
		for _, s := range seedPDUs(dg) {
			f.Add(s, dg.header, dg.data)
			all = append(all, s...)
		}
		f.Add(all, dg.header, dg.data)
	}
	f.Fuzz(func(t *testing.T, stream []byte, hd, dd bool) {
		res := &loginResult{params: defaultParams(), expCmdSN: 1, maxCmdSN: 64, expStatSN: 1}
		res.params.MaxRecvDSL = 8192
		res.params.HeaderDigest, res.params.DataDigest = hd, dd
		c := &conn{
			nc: nopConn{}, p: res.params, timeout: time.Second, log: quietLogger(),
			tasks: map[uint32]*task{}, nextITT: 1, cmdSN: 1, expCmdSN: 1, maxCmdSN: 64, expStatSN: 1,
			windowCh: make(chan struct{}), dead: make(chan struct{}), outq: make(chan dataOutJob, outqCap),
		}
		rd := make([]byte, 4096)
		tasks := []*task{
			{kind: opSCSICmd, cdb: cdbRW16(opRead16, 0, 8, false), rd: rd},
			{kind: opSCSICmd, cdb: cdbRW16(opWrite16, 0, 8, true), wr: make([]byte, 4096)},
			{kind: opNOPOut},
		}
		for _, tk := range tasks {
			tk.done = make(chan struct{})
			c.allocLocked(tk)
		}
		r := newPDUReader(bytes.NewReader(stream), res.params.MaxRecvDSL)
		r.dg = digests{hd, dd}
		for i := 0; i < 64; i++ {
			p := &pdu{}
			if err := r.readInto(p); err != nil {
				break
			}
			if err := c.dispatch(p); err != nil {
				break
			}
		}
	})
}

// FuzzTextNegotiation: any login text the target sends either fails
// negotiation with an error or yields parameters within their legal ranges.
func FuzzTextNegotiation(f *testing.F) {
	f.Add([]byte("HeaderDigest=None\x00DataDigest=None\x00MaxRecvDataSegmentLength=8192\x00MaxBurstLength=262144\x00FirstBurstLength=65536\x00InitialR2T=Yes\x00ImmediateData=Yes\x00"), false)
	f.Add([]byte("HeaderDigest=CRC32C\x00MaxBurstLength=512\x00FirstBurstLength=16777215\x00MaxOutstandingR2T=0\x00"), true)
	f.Add([]byte("X-foo=bar\x00DefaultTime2Wait=3600\x00ErrorRecoveryLevel=2\x00DataPDUInOrder=No\x00"), false)
	f.Add([]byte("TargetName=iqn.x\x00TargetAddress=[::1]:3260,1\x00TargetName=iqn.y\x00"), false)
	f.Fuzz(func(t *testing.T, b []byte, digest bool) {
		kvs, err := parseText(b)
		if err != nil {
			return
		}
		parseSendTargets(b)
		for _, kv := range kvs {
			parseTargetAddress(kv.v)
			decodeCHAPBinary(kv.v)
		}
		cfg := Config{HeaderDigest: digest, DataDigest: digest}.withDefaults()
		n := newNegotiation(&cfg, false)
		if _, err := n.handle(kvs); err != nil {
			return
		}
		p, err := n.done()
		if err != nil {
			return
		}
		switch {
		case p.MaxBurstLength < 512 || p.MaxBurstLength > cfg.MaxBurstLength:
			t.Fatalf("MaxBurstLength %d", p.MaxBurstLength)
		case p.FirstBurstLength < 512 || p.FirstBurstLength > p.MaxBurstLength:
			t.Fatalf("FirstBurstLength %d", p.FirstBurstLength)
		case p.TargetMaxRecvDSL < 512 || p.TargetMaxRecvDSL >= 1<<24:
			t.Fatalf("TargetMaxRecvDSL %d", p.TargetMaxRecvDSL)
		case p.MaxOutstandingR2T < 1 || p.MaxOutstandingR2T > cfg.MaxOutstandingR2T:
			t.Fatalf("MaxOutstandingR2T %d", p.MaxOutstandingR2T)
		case p.ErrorRecoveryLevel != 0:
			t.Fatalf("ErrorRecoveryLevel %d", p.ErrorRecoveryLevel)
		}
		// The text we would send back parses again.
		if _, err := parseText(encodeText(kvs)); err != nil {
			t.Fatalf("re-encoded text does not parse: %v", err)
		}
	})
}

// scriptConn plays a target from a script: each login request written to it
// releases the script's next PDU (48-byte header plus the data it declares),
// its tag patched to the request's when asked. No goroutines, no timers.
type scriptConn struct {
	nopConn
	script []byte
	out    []byte
	patch  bool
}

func (s *scriptConn) Write(b []byte) (int, error) {
	if len(b) >= bhsLen && b[0]&0x3f == opLoginReq && len(s.script) >= bhsLen {
		h := append([]byte(nil), s.script[:bhsLen]...)
		s.script = s.script[bhsLen:]
		if s.patch {
			copy(h[16:20], b[16:20])
		}
		n := int(h[5])<<16 | int(h[6])<<8 | int(h[7])
		n = min(n+pad4(n)+int(h[4])*4, len(s.script))
		s.out = append(append(s.out, h...), s.script[:n]...)
		s.script = s.script[n:]
	}
	return len(b), nil
}

func (s *scriptConn) Read(b []byte) (int, error) {
	if len(s.out) == 0 {
		return 0, io.EOF
	}
	n := copy(b, s.out)
	s.out = s.out[n:]
	return n, nil
}

// FuzzLogin runs the whole login state machine (security stage with or
// without CHAP, operational negotiation) against a scripted target.
func FuzzLogin(f *testing.F) {
	var script []byte
	for _, s := range seedPDUs(digests{}) {
		f.Add(s, true, false)
		script = append(script, s...)
	}
	f.Add(script, true, false)
	resp := func(flags byte, keys ...kv) []byte {
		p := &pdu{}
		p.bhs[0], p.bhs[1] = opLoginResp, flags
		binary.BigEndian.PutUint16(p.bhs[14:16], 1)
		p.data = encodeText(keys)
		var b bytes.Buffer
		w := pduWriter{}
		w.add(p)
		w.flush(&b)
		return b.Bytes()
	}
	chap := append(append(append(resp(0, kv{"AuthMethod", "CHAP"}),
		resp(0, kv{"CHAP_A", "5"}, kv{"CHAP_I", "7"}, kv{"CHAP_C", "0x0102030405"})...),
		resp(0x81, kv{"CHAP_N", "t"}, kv{"CHAP_R", "0x00"})...),
		resp(0x87, kv{"MaxRecvDataSegmentLength", "8192"})...)
	f.Add(chap, true, true)
	plain := append(resp(0x81, kv{"AuthMethod", "None"}), resp(0x87, kv{"HeaderDigest", "None"}, kv{"InitialR2T", "Yes"})...)
	f.Add(plain, true, false)
	f.Fuzz(func(t *testing.T, script []byte, patchITT, useCHAP bool) {
		cfg := Config{Target: "iqn.x", InitiatorName: "iqn.y", TaskTimeout: time.Second, Logger: quietLogger()}.withDefaults()
		if useCHAP {
			cfg.User, cfg.Secret, cfg.TargetSecret = "u", "secret", "tsecret"
		}
		sid := &sessionID{isid: newISID(), cmdSN: 1}
		login(&scriptConn{script: script, patch: patchITT}, &cfg, sid)
	})
}
