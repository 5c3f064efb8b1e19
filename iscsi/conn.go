package iscsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// task is one command (or NOP-Out ping, or logout) outstanding on a connection,
// found by its initiator task tag.
type task struct {
	itt  uint32
	kind byte // opSCSICmd, opNOPOut, opLogoutReq
	cdb  []byte
	rd   []byte // Data-In lands here (the caller's buffer)
	wr   []byte // Data-Out comes from here (the caller's buffer)

	// Reader-goroutine state.
	got       int    // Data-In bytes received, in order
	dataSN    uint32 // next expected Data-In DataSN
	r2tSN     uint32 // next expected R2TSN
	nextR2T   int    // offset the next R2T must start at
	unsolEnd  int    // bytes sent immediately or unsolicited
	r2tQueued int    // R2T sequences queued or being sent

	mu        sync.Mutex // guards rd against a late Data-In after abandon
	abandoned bool
	senders   sync.WaitGroup // Data-Out sequences reading wr

	done     chan struct{}
	finished bool // guarded by conn.mu
	err      error
	status   byte
	response byte
	sense    []byte
	residual int
	under    bool
}

// dataOutJob is one R2T's worth of Data-Out (or a NOP-Out answer when t is nil).
type dataOutJob struct {
	t      *task
	ttt    uint32
	off, n int
	nop    *pdu
}

// conn is one logged-in connection in the full feature phase. One reader
// goroutine dispatches every PDU by task tag; one writer goroutine answers R2Ts
// and target pings; callers send their own commands under wmu.
type conn struct {
	nc      net.Conn
	p       params
	lun     uint64
	timeout time.Duration
	log     *slog.Logger
	id      uint64 // generation, for logs

	wmu sync.Mutex // serializes whole PDU batches on the socket
	w   pduWriter

	mu        sync.Mutex
	tasks     map[uint32]*task
	nextITT   uint32
	cmdSN     uint32
	expCmdSN  uint32
	maxCmdSN  uint32
	expStatSN uint32
	windowCh  chan struct{} // closed and replaced when MaxCmdSN moves
	deadErr   error

	dead   chan struct{}
	outq   chan dataOutJob
	lastRx atomic.Int64
}

const outqCap = 1024

func newConn(nc net.Conn, res *loginResult, lun uint64, timeout time.Duration, log *slog.Logger, id uint64) *conn {
	c := &conn{
		nc:        nc,
		p:         res.params,
		lun:       lun,
		timeout:   timeout,
		log:       log,
		id:        id,
		tasks:     map[uint32]*task{},
		nextITT:   1,
		cmdSN:     res.expCmdSN,
		expCmdSN:  res.expCmdSN,
		maxCmdSN:  res.maxCmdSN,
		expStatSN: res.expStatSN,
		windowCh:  make(chan struct{}),
		dead:      make(chan struct{}),
		outq:      make(chan dataOutJob, outqCap),
	}
	if snLess(c.maxCmdSN+1, c.expCmdSN) {
		c.maxCmdSN = c.expCmdSN - 1
	}
	c.w.dg = digests{res.params.HeaderDigest, res.params.DataDigest}
	c.lastRx.Store(time.Now().UnixNano())
	r := newPDUReader(nc, res.params.MaxRecvDSL)
	r.dg = c.w.dg
	go c.readLoop(r)
	go c.writeLoop()
	return c
}

// kill ends the connection once: every outstanding task fails with an error
// wrapping ErrConnectionLost and cause.
func (c *conn) kill(cause error) {
	c.mu.Lock()
	if c.deadErr != nil {
		c.mu.Unlock()
		return
	}
	if errors.Is(cause, ErrConnectionLost) {
		c.deadErr = cause
	} else {
		c.deadErr = fmt.Errorf("%w: %w", ErrConnectionLost, cause)
	}
	tasks := c.tasks
	c.tasks = map[uint32]*task{}
	close(c.dead)
	c.nc.Close()
	for _, t := range tasks {
		c.finishLocked(t, c.deadErr)
	}
	c.mu.Unlock()
}

func (c *conn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadErr
}

// finishLocked completes t once. c.mu is held.
func (c *conn) finishLocked(t *task, err error) {
	if t.finished {
		return
	}
	t.finished = true
	t.err = err
	delete(c.tasks, t.itt)
	close(t.done)
}

func (c *conn) allocLocked(t *task) {
	for {
		itt := c.nextITT
		c.nextITT++
		if itt == reservedTag {
			continue
		}
		if _, busy := c.tasks[itt]; busy {
			continue
		}
		t.itt = itt
		c.tasks[itt] = t
		return
	}
}

// updateSN folds in a target PDU's ExpCmdSN and MaxCmdSN (RFC 7143 §4.2.2.1).
// c.mu is held.
func (c *conn) updateSNLocked(p *pdu) {
	exp, max := p.u32(28), p.u32(32)
	if snLess(max+1, exp) {
		return // MaxCmdSN < ExpCmdSN-1: ignore both
	}
	if snLess(c.expCmdSN, exp) {
		c.expCmdSN = exp
	}
	if snLess(c.maxCmdSN, max) {
		c.maxCmdSN = max
		close(c.windowCh)
		c.windowCh = make(chan struct{})
	}
}

func (c *conn) statSNLocked(p *pdu) {
	if sn := p.u32(24) + 1; snLess(c.expStatSN, sn) {
		c.expStatSN = sn
	}
}

// run sends t and waits for it to finish, at most until deadline; past the
// deadline the connection is declared lost. It returns once the connection no
// longer touches t's buffers.
func (c *conn) run(t *task, deadline time.Time) error {
	t.done = make(chan struct{})
	c.mu.Lock()
	if c.deadErr != nil {
		err := c.deadErr
		c.mu.Unlock()
		return err
	}
	c.allocLocked(t)
	c.mu.Unlock()

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	if err := c.send(t, deadline, timer.C); err != nil {
		c.kill(err)
	}
	select {
	case <-t.done:
	case <-timer.C:
		c.kill(fmt.Errorf("%w: %s timed out after %v", ErrConnectionLost, t.describe(), c.timeout))
		<-t.done
	}
	t.mu.Lock()
	t.abandoned = true
	t.mu.Unlock()
	t.senders.Wait()
	return t.err
}

func (t *task) describe() string {
	switch t.kind {
	case opNOPOut:
		return "NOP-Out ping"
	case opLogoutReq:
		return "logout"
	}
	return fmt.Sprintf("command %#02x (tag %#x)", t.cdb[0], t.itt)
}

// send writes t's PDUs: the command, immediate data and unsolicited Data-Out,
// waiting for the CmdSN window if the target has closed it.
func (c *conn) send(t *task, deadline time.Time, timeout <-chan time.Time) error {
	immediate := t.kind != opSCSICmd // pings and logout go as immediate PDUs
	c.wmu.Lock()
	for {
		c.mu.Lock()
		if c.deadErr != nil {
			err := c.deadErr
			c.mu.Unlock()
			c.wmu.Unlock()
			return err
		}
		if immediate || snLessEq(c.cmdSN, c.maxCmdSN) {
			break
		}
		ch := c.windowCh
		c.mu.Unlock()
		c.wmu.Unlock()
		select {
		case <-ch:
		case <-c.dead:
		case <-timeout:
			return fmt.Errorf("%w: CmdSN window stayed closed for %v", ErrConnectionLost, c.timeout)
		}
		c.wmu.Lock()
	}
	defer c.wmu.Unlock()
	cmdSN := c.cmdSN
	if !immediate {
		c.cmdSN++
	}
	expStatSN := c.expStatSN
	c.mu.Unlock()

	p := &pdu{}
	p.setITT(t.itt)
	p.put32(24, cmdSN)
	p.put32(28, expStatSN)
	switch t.kind {
	case opNOPOut:
		p.bhs[0] = flagImmed | opNOPOut
		p.bhs[1] = flagFinal
		p.put64(8, lunField(c.lun))
		p.put32(20, reservedTag)
		c.w.add(p)
	case opLogoutReq:
		p.bhs[0] = flagImmed | opLogoutReq
		p.bhs[1] = flagFinal // reason 0: close the session
		c.w.add(p)
	default:
		p.bhs[0] = opSCSICmd
		f := byte(flagFinal | 0x01) // simple task attribute
		p.put64(8, lunField(c.lun))
		var expLen int
		if t.rd != nil {
			f |= 0x40
			expLen = len(t.rd)
		}
		if t.wr != nil {
			f |= 0x20
			expLen = len(t.wr)
		}
		p.put32(20, uint32(expLen))
		copy(p.bhs[32:48], t.cdb)
		var unsol []*pdu
		if t.wr != nil {
			burst := min(len(t.wr), c.p.FirstBurstLength)
			sent := 0
			if c.p.ImmediateData {
				sent = min(burst, c.p.TargetMaxRecvDSL)
				p.data = t.wr[:sent]
			}
			if !c.p.InitialR2T {
				var dataSN uint32
				for sent < burst {
					n := min(burst-sent, c.p.TargetMaxRecvDSL)
					d := &pdu{}
					d.bhs[0] = opDataOut
					d.put64(8, lunField(c.lun))
					d.setITT(t.itt)
					d.put32(20, reservedTag)
					d.put32(28, expStatSN)
					d.put32(36, dataSN)
					d.put32(40, uint32(sent))
					d.data = t.wr[sent : sent+n]
					dataSN++
					sent += n
					unsol = append(unsol, d)
				}
				if len(unsol) > 0 {
					unsol[len(unsol)-1].bhs[1] = flagFinal
					f &^= flagFinal // unsolicited Data-Out follows
				}
			}
			c.mu.Lock()
			t.unsolEnd = sent
			t.nextR2T = sent
			c.mu.Unlock()
		}
		p.bhs[1] = f
		c.w.add(p)
		for _, d := range unsol {
			c.w.add(d)
		}
	}
	c.nc.SetWriteDeadline(deadline)
	if err := c.w.flush(c.nc); err != nil {
		return fmt.Errorf("%w: write: %w", ErrConnectionLost, err)
	}
	return nil
}

// lunField encodes a LUN in the 8-byte SAM format (peripheral or flat addressing).
func lunField(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	if lun < 16384 {
		return (0x4000 | lun) << 48
	}
	return lun // already an 8-byte SAM LUN
}

// writeLoop sends Data-Out sequences for R2Ts and answers target pings.
func (c *conn) writeLoop() {
	for {
		select {
		case <-c.dead:
			// Release every queued sequence so callers stop waiting on them.
			for {
				select {
				case j := <-c.outq:
					if j.t != nil {
						j.t.senders.Done()
					}
				default:
					return
				}
			}
		case j := <-c.outq:
			err := c.writeJob(j)
			if j.t != nil {
				c.mu.Lock()
				j.t.r2tQueued--
				c.mu.Unlock()
				j.t.senders.Done()
			}
			if err != nil {
				c.kill(err)
			}
		}
	}
}

func (c *conn) writeJob(j dataOutJob) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.err() != nil {
		return nil
	}
	c.mu.Lock()
	expStatSN := c.expStatSN
	c.mu.Unlock()
	if j.nop != nil {
		j.nop.put32(28, expStatSN)
		c.w.add(j.nop)
	} else {
		var dataSN uint32
		for sent := 0; sent < j.n; {
			n := min(j.n-sent, c.p.TargetMaxRecvDSL)
			d := &pdu{}
			d.bhs[0] = opDataOut
			if sent+n == j.n {
				d.bhs[1] = flagFinal
			}
			d.put64(8, lunField(c.lun))
			d.setITT(j.t.itt)
			d.put32(20, j.ttt)
			d.put32(28, expStatSN)
			d.put32(36, dataSN)
			d.put32(40, uint32(j.off+sent))
			d.data = j.t.wr[j.off+sent : j.off+sent+n]
			c.w.add(d)
			dataSN++
			sent += n
		}
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	if err := c.w.flush(c.nc); err != nil {
		return fmt.Errorf("%w: write: %w", ErrConnectionLost, err)
	}
	return nil
}

// readLoop is the single reader: it dispatches every PDU by opcode and tag until
// the connection fails.
func (c *conn) readLoop(r *pduReader) {
	for {
		p := &pdu{}
		if err := r.readInto(p); err != nil {
			c.kill(err)
			return
		}
		c.lastRx.Store(time.Now().UnixNano())
		if err := c.dispatch(p); err != nil {
			c.log.Warn("iscsi: dropping connection", "conn", c.id, "err", err)
			c.kill(err)
			return
		}
	}
}

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

func (c *conn) dispatch(p *pdu) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deadErr != nil {
		return nil
	}
	op := p.opcode()
	switch op {
	case opDataIn, opSCSIResp, opNOPIn, opR2T, opAsync, opReject, opLogoutResp, opTaskMgmtRsp, opTextResp:
		c.updateSNLocked(p)
	default:
		return protoErr("unexpected opcode %#02x from target", op)
	}
	if len(p.ahs) > 0 && op != opSCSIResp && op != opDataIn {
		return protoErr("opcode %#02x with additional header segments", op)
	}
	switch op {
	case opNOPIn:
		return c.nopInLocked(p)
	case opAsync:
		return c.asyncLocked(p)
	case opReject:
		c.statSNLocked(p)
		if len(p.data) < bhsLen {
			return protoErr("reject with %d bytes of rejected header", len(p.data))
		}
		itt := binary.BigEndian.Uint32(p.data[16:20])
		t := c.tasks[itt]
		if t == nil {
			return protoErr("target rejected a PDU (reason %#02x) of no outstanding task", p.bhs[2])
		}
		c.finishLocked(t, fmt.Errorf("%w: target rejected %s (reason %#02x)", ErrProtocol, t.describe(), p.bhs[2]))
		return nil
	}
	itt := p.itt()
	t := c.tasks[itt]
	if t == nil {
		return protoErr("opcode %#02x for unknown task tag %#x", op, itt)
	}
	switch op {
	case opDataIn:
		return c.dataInLocked(t, p)
	case opSCSIResp:
		if t.kind != opSCSICmd {
			return protoErr("SCSI response for %s", t.describe())
		}
		c.statSNLocked(p)
		return c.responseLocked(t, p)
	case opR2T:
		return c.r2tLocked(t, p)
	case opLogoutResp:
		if t.kind != opLogoutReq {
			return protoErr("logout response for %s", t.describe())
		}
		c.statSNLocked(p)
		c.finishLocked(t, nil)
		return nil
	}
	return protoErr("opcode %#02x for %s", op, t.describe())
}

func (c *conn) nopInLocked(p *pdu) error {
	if len(p.data) > 0 && p.itt() == reservedTag {
		return protoErr("unsolicited NOP-In with %d data bytes", len(p.data))
	}
	if itt := p.itt(); itt != reservedTag {
		t := c.tasks[itt]
		if t == nil || t.kind != opNOPOut {
			return protoErr("NOP-In for unknown ping tag %#x", itt)
		}
		c.statSNLocked(p)
		c.finishLocked(t, nil)
		return nil
	}
	ttt := p.u32(20)
	if ttt == reservedTag {
		return nil // a ping that wants no answer
	}
	// The target pings us: answer with a NOP-Out carrying its TTT.
	r := &pdu{}
	r.bhs[0] = flagImmed | opNOPOut
	r.bhs[1] = flagFinal
	copy(r.bhs[8:16], p.bhs[8:16])
	r.setITT(reservedTag)
	r.put32(20, ttt)
	r.put32(24, c.cmdSN)
	select {
	case c.outq <- dataOutJob{nop: r}:
	default:
		return protoErr("too many target pings queued")
	}
	return nil
}

func (c *conn) asyncLocked(p *pdu) error {
	switch ev := p.bhs[36]; ev {
	case 0:
		return nil // a SCSI asynchronous event: nothing to do with it here
	case 1:
		return fmt.Errorf("%w: target requested logout", ErrConnectionLost)
	case 2, 3:
		return fmt.Errorf("%w: target is dropping the connection (async event %d)", ErrConnectionLost, ev)
	default:
		c.log.Info("iscsi: ignoring async event", "conn", c.id, "event", ev)
		return nil
	}
}

func (c *conn) dataInLocked(t *task, p *pdu) error {
	if t.kind != opSCSICmd || t.rd == nil {
		return protoErr("Data-In for %s, which reads nothing", t.describe())
	}
	f := p.flags()
	if sn := p.u32(36); sn != t.dataSN {
		return protoErr("Data-In DataSN %d, want %d", sn, t.dataSN)
	}
	t.dataSN++
	off := int(p.u32(40))
	if off != t.got {
		return protoErr("Data-In at offset %d, want %d (data is in order)", off, t.got)
	}
	if len(p.data) > len(t.rd)-off {
		return protoErr("Data-In of %d bytes at %d overruns a %d-byte buffer", len(p.data), off, len(t.rd))
	}
	t.mu.Lock()
	if !t.abandoned {
		copy(t.rd[off:], p.data)
	}
	t.mu.Unlock()
	t.got += len(p.data)
	if f&0x01 == 0 { // no status yet
		return nil
	}
	if f&flagFinal == 0 {
		return protoErr("Data-In with status but without the F bit")
	}
	c.statSNLocked(p)
	t.status = p.bhs[3]
	if f&0x06 != 0 {
		t.residual = int(p.u32(44))
		t.under = f&0x02 != 0
	}
	return c.completeLocked(t)
}

func (c *conn) responseLocked(t *task, p *pdu) error {
	f := p.flags()
	if f&flagFinal == 0 {
		return protoErr("SCSI response without the F bit")
	}
	t.response, t.status = p.bhs[2], p.bhs[3]
	if f&0x06 != 0 {
		t.residual = int(p.u32(44))
		t.under = f&0x02 != 0
	}
	if len(p.data) >= 2 {
		n := int(binary.BigEndian.Uint16(p.data[0:2]))
		if n > len(p.data)-2 {
			return protoErr("sense length %d in a %d-byte segment", n, len(p.data))
		}
		t.sense = append([]byte(nil), p.data[2:2+n]...)
	} else if len(p.data) == 1 {
		return protoErr("1-byte SCSI response data segment")
	}
	return c.completeLocked(t)
}

func (c *conn) completeLocked(t *task) error {
	if t.response != 0 || t.status != statusGood {
		e := &SCSIError{Op: t.cdb[0], Status: t.status, Response: t.response}
		parseSense(e, t.sense)
		c.finishLocked(t, e)
		return nil
	}
	if t.rd != nil {
		want := len(t.rd)
		if t.under {
			if t.residual < 0 || t.residual > want {
				return protoErr("residual %d for a %d-byte read", t.residual, want)
			}
			want -= t.residual
		}
		if t.got < want {
			c.finishLocked(t, protoErr("read of %d bytes returned %d", want, t.got))
			return nil
		}
	}
	c.finishLocked(t, nil)
	return nil
}

func (c *conn) r2tLocked(t *task, p *pdu) error {
	if t.kind != opSCSICmd || t.wr == nil {
		return protoErr("R2T for %s, which writes nothing", t.describe())
	}
	if sn := p.u32(36); sn != t.r2tSN {
		return protoErr("R2TSN %d, want %d", sn, t.r2tSN)
	}
	t.r2tSN++
	off, n := int(p.u32(40)), int(p.u32(44))
	switch {
	case n <= 0 || n > c.p.MaxBurstLength:
		return protoErr("R2T for %d bytes (MaxBurstLength %d)", n, c.p.MaxBurstLength)
	case off != t.nextR2T:
		return protoErr("R2T at offset %d, want %d", off, t.nextR2T)
	case n > len(t.wr)-off:
		return protoErr("R2T for %d bytes at %d past a %d-byte write", n, off, len(t.wr))
	case n < 512 && off+n != len(t.wr):
		return protoErr("R2T for %d bytes short of the end", n)
	case t.r2tQueued >= c.p.MaxOutstandingR2T+1:
		return protoErr("more than MaxOutstandingR2T=%d R2Ts outstanding", c.p.MaxOutstandingR2T)
	}
	t.nextR2T = off + n
	t.r2tQueued++
	t.senders.Add(1)
	select {
	case c.outq <- dataOutJob{t: t, ttt: p.u32(20), off: off, n: n}:
	default:
		t.senders.Done()
		return protoErr("too many R2Ts queued")
	}
	return nil
}

// scsi runs one SCSI command to completion on this connection. It returns the
// number of bytes read for a read command.
func (c *conn) scsi(cdb, rd, wr []byte) (int, error) {
	t := &task{kind: opSCSICmd, cdb: cdb, rd: rd, wr: wr}
	err := c.run(t, time.Now().Add(c.timeout))
	if err != nil {
		return 0, err
	}
	if rd != nil {
		n := len(rd)
		if t.under {
			n -= t.residual
		}
		return n, nil
	}
	return len(wr), nil
}

// ping sends a NOP-Out and waits for the NOP-In.
func (c *conn) ping() error {
	return c.run(&task{kind: opNOPOut}, time.Now().Add(c.timeout))
}

// logout ends the session politely, then closes the socket.
func (c *conn) logout(wait time.Duration) {
	if c.err() == nil {
		c.run(&task{kind: opLogoutReq}, time.Now().Add(wait))
	}
	c.kill(errors.New("logged out"))
}

// keepalive pings an idle connection every interval; a ping that is not answered
// within the task timeout kills the connection.
func (c *conn) keepalive(interval time.Duration) {
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, c.lastRx.Load())) < interval {
			continue
		}
		if err := c.ping(); err != nil {
			return
		}
	}
}
