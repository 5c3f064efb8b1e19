package iscsi

import (
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeTarget is a small in-memory iSCSI target for unit tests of our own
// initiator: enough of login, SCSI and R2T to serve a Device, plus hooks to
// misbehave. It is not a conformance reference (tgtd is, in the integration tier).
type fakeTarget struct {
	t    testing.TB
	ln   net.Listener
	addr string

	// Negotiation answers.
	initialR2T    bool
	immediateData bool
	maxRecvDSL    int // the target's own limit, declared to the initiator
	firstBurst    int
	maxBurst      int
	digests       bool
	window        uint32 // commands the CmdSN window admits (default 16)
	violations    int    // commands received beyond the advertised MaxCmdSN

	mu    sync.Mutex
	disk  []byte
	conns []net.Conn
	// hook, when set, gets first pick of every SCSI command after bring-up
	// (READ/WRITE only); it returns true if it handled the command.
	hook   func(fc *fakeConn, cmd *pdu) bool
	logins int
}

const fakeBlock = 512

func newFakeTarget(t testing.TB, opts ...func(*fakeTarget)) *fakeTarget {
	return newFakeTargetAt(t, "127.0.0.1:0", opts...)
}

// newFakeTargetAt is newFakeTarget listening on addr.
func newFakeTargetAt(t testing.TB, addr string, opts ...func(*fakeTarget)) *fakeTarget {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTarget{t: t, ln: ln, addr: ln.Addr().String(), disk: make([]byte, 1<<20),
		immediateData: true, maxRecvDSL: 8192, firstBurst: 65536, maxBurst: 262144, window: 16}
	for _, o := range opts {
		o(ft)
	}
	go ft.accept()
	t.Cleanup(ft.close)
	return ft
}

func (ft *fakeTarget) close() {
	ft.ln.Close()
	ft.mu.Lock()
	for _, c := range ft.conns {
		c.Close()
	}
	ft.mu.Unlock()
}

func (ft *fakeTarget) setHook(h func(fc *fakeConn, cmd *pdu) bool) {
	ft.mu.Lock()
	ft.hook = h
	ft.mu.Unlock()
}

func (ft *fakeTarget) config() Config {
	// DialTimeout well above the default: a connect to a loopback listener
	// never hangs, but on a loaded machine the goroutines behind it may not
	// run for 500 ms (seen at load 30), and no test here is about dialing.
	return Config{Portal: ft.addr, Target: "iqn.2025-01.test:fake", LUN: 0,
		TaskTimeout: time.Second, NOPInterval: 300 * time.Millisecond, DialTimeout: 3 * time.Second, Logger: quietLogger()}
}

func (ft *fakeTarget) accept() {
	for {
		nc, err := ft.ln.Accept()
		if err != nil {
			return
		}
		ft.mu.Lock()
		ft.conns = append(ft.conns, nc)
		ft.mu.Unlock()
		fc := &fakeConn{ft: ft, nc: nc, r: newPDUReader(nc, 1<<24)}
		go fc.serve()
	}
}

// fakeConn is one initiator connection to the fake target.
type fakeConn struct {
	ft     *fakeTarget
	nc     net.Conn
	r      *pduReader
	w      pduWriter
	wmu    sync.Mutex
	statSN uint32
	cmdSN  uint32
	maxSN  uint32     // the MaxCmdSN last advertised
	smu    sync.Mutex // guards the three above: hooks stamp from their own goroutines
}

func (fc *fakeConn) send(ps ...*pdu) error {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	for _, p := range ps {
		fc.w.add(p)
	}
	return fc.w.flush(fc.nc)
}

// stamp fills StatSN, ExpCmdSN and MaxCmdSN; status PDUs advance StatSN.
func (fc *fakeConn) stamp(p *pdu, status bool) *pdu {
	fc.smu.Lock()
	defer fc.smu.Unlock()
	p.put32(24, fc.statSN)
	if status {
		fc.statSN++
	}
	p.put32(28, fc.cmdSN)
	fc.maxSN = fc.cmdSN + fc.ft.window - 1
	p.put32(32, fc.maxSN)
	return p
}

func (fc *fakeConn) serve() {
	defer fc.nc.Close()
	if !fc.login() {
		return
	}
	for {
		p, err := fc.r.read()
		if err != nil {
			return
		}
		if p.bhs[0]&flagImmed == 0 {
			fc.smu.Lock()
			if snLess(fc.maxSN, p.u32(24)) {
				fc.ft.mu.Lock()
				fc.ft.violations++
				fc.ft.mu.Unlock()
			}
			fc.cmdSN = p.u32(24) + 1
			fc.smu.Unlock()
		}
		switch p.opcode() {
		case opNOPOut:
			if p.itt() != reservedTag {
				r := &pdu{}
				r.bhs[0], r.bhs[1] = opNOPIn, flagFinal
				r.setITT(p.itt())
				r.put32(20, reservedTag)
				fc.send(fc.stamp(r, true))
			}
		case opLogoutReq:
			r := &pdu{}
			r.bhs[0], r.bhs[1] = opLogoutResp, flagFinal
			r.setITT(p.itt())
			fc.send(fc.stamp(r, true))
			return
		case opSCSICmd:
			cdb := p.bhs[32:48]
			fc.ft.mu.Lock()
			hook := fc.ft.hook
			fc.ft.mu.Unlock()
			if hook != nil && (cdb[0] == opRead16 || cdb[0] == opWrite16) && hook(fc, p) {
				continue
			}
			if !fc.scsi(p) {
				return
			}
		case opDataOut:
			// Unsolicited or solicited data outside a write we are collecting:
			// ignore (scsi collects its own).
		default:
			return
		}
	}
}

func (fc *fakeConn) login() bool {
	ft := fc.ft
	for {
		p, err := fc.r.read()
		if err != nil || p.opcode() != opLoginReq {
			return false
		}
		kvs, _ := parseText(p.data)
		csg := (p.flags() >> 2) & 3
		r := &pdu{}
		r.bhs[0] = opLoginResp
		copy(r.bhs[8:14], p.bhs[8:14])
		r.setITT(p.itt())
		fc.cmdSN = p.u32(24)
		var out []kv
		if csg == stageSecurity {
			r.bhs[1] = 0x80 | stageSecurity<<2 | stageOperational
			out = append(out, kv{"AuthMethod", "None"}, kv{"TargetPortalGroupTag", "1"})
			r.data = encodeText(out)
			if fc.send(fc.stamp(r, true)) != nil {
				return false
			}
			continue
		}
		for _, k := range kvs {
			switch k.k {
			case "HeaderDigest", "DataDigest":
				v := "None"
				if ft.digests && k.v == "CRC32C" {
					v = "CRC32C"
				}
				out = append(out, kv{k.k, v})
			case "InitialR2T":
				out = append(out, kv{k.k, yesNo(ft.initialR2T || k.v == "Yes")})
			case "ImmediateData":
				out = append(out, kv{k.k, yesNo(ft.immediateData && k.v == "Yes")})
			case "FirstBurstLength":
				n, _ := strconv.Atoi(k.v)
				out = append(out, kv{k.k, strconv.Itoa(min(n, ft.firstBurst))})
			case "MaxBurstLength":
				n, _ := strconv.Atoi(k.v)
				out = append(out, kv{k.k, strconv.Itoa(min(n, ft.maxBurst))})
			case "MaxRecvDataSegmentLength":
				out = append(out, kv{k.k, strconv.Itoa(ft.maxRecvDSL)})
			default:
				out = append(out, k)
			}
		}
		r.bhs[1] = 0x80 | stageOperational<<2 | stageFullFeature
		binary.BigEndian.PutUint16(r.bhs[14:16], 7) // TSIH
		r.data = encodeText(out)
		if fc.send(fc.stamp(r, true)) != nil {
			return false
		}
		ft.mu.Lock()
		ft.logins++
		ft.mu.Unlock()
		dg := digests{ft.digests, ft.digests}
		fc.r.dg, fc.w.dg = dg, dg
		return true
	}
}

// respond sends a SCSI response with status and optional sense.
func (fc *fakeConn) respond(cmd *pdu, status byte, sense []byte) {
	r := &pdu{}
	r.bhs[0], r.bhs[1], r.bhs[3] = opSCSIResp, flagFinal, status
	r.setITT(cmd.itt())
	if sense != nil {
		r.data = append(binary.BigEndian.AppendUint16(nil, uint16(len(sense))), sense...)
	}
	fc.send(fc.stamp(r, true))
}

// dataIn sends b as Data-In PDUs of at most the initiator's limit, with status
// in the last one.
func (fc *fakeConn) dataIn(cmd *pdu, b []byte, maxSeg int) {
	expLen := int(cmd.u32(20))
	var ps []*pdu
	sn := uint32(0)
	for off := 0; off < len(b) || off == 0; {
		n := min(maxSeg, len(b)-off)
		d := &pdu{}
		d.bhs[0] = opDataIn
		d.setITT(cmd.itt())
		d.put32(20, reservedTag)
		d.put32(36, sn)
		d.put32(40, uint32(off))
		d.data = b[off : off+n]
		off += n
		sn++
		last := off >= len(b)
		if last {
			d.bhs[1] = flagFinal | 0x01
			if len(b) < expLen {
				d.bhs[1] |= 0x02 // underflow
				d.put32(44, uint32(expLen-len(b)))
			}
			fc.stamp(d, true)
		} else {
			fc.stamp(d, false)
		}
		ps = append(ps, d)
		if last {
			break
		}
	}
	fc.send(ps...)
}

func (fc *fakeConn) scsi(cmd *pdu) bool {
	ft := fc.ft
	cdb := cmd.bhs[32:48]
	expLen := int(cmd.u32(20))
	switch cdb[0] {
	case 0x00, opSyncCache10: // TEST UNIT READY, SYNCHRONIZE CACHE
		fc.respond(cmd, statusGood, nil)
	case 0x12: // INQUIRY
		if cdb[1]&1 != 0 {
			fc.respond(cmd, statusCheckCondition, []byte{0x70, 0, SenseIllegalRequest, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0})
			return true
		}
		b := make([]byte, 36)
		b[2], b[3], b[4], b[7] = 5, 2, 31, 0x02
		copy(b[8:], "FAKE    FAKE-DISK       0001")
		fc.dataIn(cmd, b[:min(len(b), expLen)], 8192)
	case 0x9e: // READ CAPACITY(16)
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b, uint64(len(ft.disk)/fakeBlock-1))
		binary.BigEndian.PutUint32(b[8:], fakeBlock)
		fc.dataIn(cmd, b[:min(32, expLen)], 8192)
	case opRead16:
		lba := binary.BigEndian.Uint64(cdb[2:10])
		n := int(binary.BigEndian.Uint32(cdb[10:14])) * fakeBlock
		ft.mu.Lock()
		b := append([]byte(nil), ft.disk[int(lba)*fakeBlock:int(lba)*fakeBlock+n]...)
		ft.mu.Unlock()
		fc.dataIn(cmd, b, 4096)
	case opWrite16:
		lba := binary.BigEndian.Uint64(cdb[2:10])
		n := int(binary.BigEndian.Uint32(cdb[10:14])) * fakeBlock
		buf := make([]byte, n)
		got := copy(buf, cmd.data)
		// Unsolicited Data-Out up to the first burst, if the command said so.
		if cmd.flags()&flagFinal == 0 {
			for {
				d, err := fc.r.read()
				if err != nil || d.opcode() != opDataOut {
					return false
				}
				copy(buf[d.u32(40):], d.data)
				got = int(d.u32(40)) + len(d.data)
				if d.flags()&flagFinal != 0 {
					break
				}
			}
		}
		var r2tsn uint32
		for got < n {
			l := min(n-got, ft.maxBurst)
			r := &pdu{}
			r.bhs[0], r.bhs[1] = opR2T, flagFinal
			r.setITT(cmd.itt())
			r.put32(20, 0x1000+r2tsn)
			r.put32(36, r2tsn)
			r.put32(40, uint32(got))
			r.put32(44, uint32(l))
			r2tsn++
			fc.send(fc.stamp(r, false))
			for end := got + l; got < end; {
				d, err := fc.r.read()
				if err != nil || d.opcode() != opDataOut || int(d.u32(40)) != got {
					return false
				}
				copy(buf[got:], d.data)
				got += len(d.data)
			}
		}
		ft.mu.Lock()
		copy(ft.disk[int(lba)*fakeBlock:], buf)
		ft.mu.Unlock()
		fc.respond(cmd, statusGood, nil)
	default:
		fc.respond(cmd, statusCheckCondition, []byte{0x70, 0, SenseIllegalRequest, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0})
	}
	return true
}
