package iscsi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"xedge/internal/backoff"
)

var (
	// ErrConnectionLost is returned for a command that was outstanding when the
	// connection failed (reset, task timeout, unanswered keepalive, protocol
	// violation). For a write its outcome is unknown: it may or may not be on
	// the medium. Retrying the same write after re-login is always safe.
	ErrConnectionLost = errors.New("iscsi: connection lost")
	// ErrReconnecting is returned at once, without sending anything, while the
	// device has no logged-in connection; nothing was written.
	ErrReconnecting = errors.New("iscsi: reconnecting")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("iscsi: device closed")
	// ErrUnaligned is returned by WriteAt for an offset or length that is not a
	// multiple of the block size.
	ErrUnaligned = errors.New("iscsi: unaligned write")
	// ErrOutOfRange is returned by WriteAt past the end of the LUN.
	ErrOutOfRange = errors.New("iscsi: write past the end of the device")
)

// State is the device's connection state.
type State int

const (
	StateDisconnected State = iota // no connection; Run is (re)logging in
	StateConnected
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateClosed:
		return "closed"
	}
	return "disconnected"
}

// Stats are counters for operators and tests.
type Stats struct {
	State       string    `json:"state"`
	Logins      uint64    `json:"logins"`
	Losses      uint64    `json:"losses"`
	LastLoss    time.Time `json:"last_loss,omitzero"`
	LastLossErr string    `json:"last_loss_error,omitempty"`
	LastLogin   time.Time `json:"last_login,omitzero"`
	Params      Params    `json:"params"`
}

// Params are the negotiated operational parameters of the current connection.
type Params struct {
	HeaderDigest      bool `json:"header_digest"`
	DataDigest        bool `json:"data_digest"`
	MaxRecvDSL        int  `json:"max_recv_data_segment_length"`
	TargetMaxRecvDSL  int  `json:"target_max_recv_data_segment_length"`
	MaxBurstLength    int  `json:"max_burst_length"`
	FirstBurstLength  int  `json:"first_burst_length"`
	MaxOutstandingR2T int  `json:"max_outstanding_r2t"`
	InitialR2T        bool `json:"initial_r2t"`
	ImmediateData     bool `json:"immediate_data"`
}

// Device is one LUN reached through a userspace iSCSI session. It satisfies
// storage.BlockDevice. Create it with Dial, or New then Start and Run.
type Device struct {
	cfg Config
	log *slog.Logger
	sid sessionID
	sem chan struct{}

	mu       sync.Mutex
	c        *conn
	gen      uint64
	state    State
	capacity Capacity
	inq      Inquiry
	stats    Stats
	params   params
	up       chan struct{} // closed while connected
	changed  chan struct{} // closed and replaced on every state change
	// WriteBack bookkeeping: a connection lost after a write that no Sync has
	// covered makes the next Sync fail.
	dirty    bool
	syncLost bool

	runCancel context.CancelFunc
	runDone   chan struct{}

	io ioStats // command counters and latency (iostats.go)
}

// New returns a device for cfg without connecting.
func New(cfg Config) *Device {
	cfg = cfg.withDefaults()
	d := &Device{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "iscsi", "target", cfg.Target, "lun", cfg.LUN, "portal", cfg.Portal),
		sid:     sessionID{isid: newISID(), cmdSN: 1},
		sem:     make(chan struct{}, cfg.MaxInFlight),
		up:      make(chan struct{}),
		changed: make(chan struct{}),
	}
	devices.Store(d, struct{}{})
	return d
}

// Dial logs in to the LUN described by cfg and keeps the session up in the
// background (re-login with backoff) until Close.
func Dial(ctx context.Context, cfg Config) (*Device, error) {
	d := New(cfg)
	if err := d.Start(ctx); err != nil {
		d.Close() // out of the device registry
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	d.mu.Lock()
	d.runCancel = cancel
	d.runDone = make(chan struct{})
	d.mu.Unlock()
	go func() {
		defer close(d.runDone)
		d.Run(rctx)
	}()
	return d, nil
}

// DialRetry is Dial for a target that may not answer yet (a node starting while
// its iSCSI target reboots, or on a host too loaded to answer within
// DialTimeout): while the login fails for want of an answer (a connect refused
// or unanswered, a login or bring-up command timed out, a connection lost,
// a target error) it tries again with the re-login backoff until ctx is done,
// telling onRetry (may be nil) about each failure. A login the target refuses
// for good (ErrAuth, ErrTargetNotFound, another initiator error) and a LUN
// that is not a disk end it at once: retrying would not change the answer.
func DialRetry(ctx context.Context, cfg Config, onRetry func(attempt int, err error)) (*Device, error) {
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: time.Second, Jitter: 0.2}
	for attempt := 1; ; attempt++ {
		d, err := Dial(ctx, cfg)
		if err == nil {
			return d, nil
		}
		if !Transient(err) {
			return nil, err
		}
		if onRetry != nil {
			onRetry(attempt, err)
		}
		if werr := bo.Wait(ctx); werr != nil {
			return nil, fmt.Errorf("%w (after %d attempts; last: %w)", werr, attempt, err)
		}
	}
}

// Transient reports whether a failed Dial may succeed if tried again: the
// target did not answer (in time), or answered with a target error (status
// class 3: it is starting or out of resources).
func Transient(err error) bool {
	var le *LoginError
	if errors.As(err, &le) {
		return le.Class == 3
	}
	var ne net.Error
	return errors.Is(err, errNoAnswer) || errors.Is(err, ErrConnectionLost) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) || errors.As(err, &ne)
}

// DialURL is Dial with an iscsi:// URL (see ParseURL).
func DialURL(ctx context.Context, rawURL string) (*Device, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return Dial(ctx, cfg)
}

// Start makes one login attempt and reads the LUN's capacity. Its error says
// why the target could not be used (ErrAuth, ErrTargetNotFound, a dial error).
func (d *Device) Start(ctx context.Context) error {
	if d.cfg.Target == "" {
		return fmt.Errorf("%w: no target IQN", ErrBadURL)
	}
	return d.connect(ctx)
}

// Run keeps the session logged in until ctx is cancelled: when the connection
// is lost it logs in again with exponential backoff (ReconnectMin to
// ReconnectMax, ±20% jitter). It returns ctx's error.
func (d *Device) Run(ctx context.Context) error {
	bo := backoff.Backoff{Min: d.cfg.ReconnectMin, Max: d.cfg.ReconnectMax, Jitter: 0.2}
	failures := 0
	for {
		d.mu.Lock()
		c, closed := d.c, d.state == StateClosed
		d.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if c != nil {
			select {
			case <-c.dead:
				d.lost(c)
				bo.Reset()
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		err := d.connect(ctx)
		if err == nil {
			if failures > 0 {
				d.log.Info("iscsi: session restored", "attempts", failures+1)
			}
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures++
		if failures == 1 || failures%20 == 0 {
			d.log.Warn("iscsi: login failed; retrying", "attempt", failures, "err", err)
		}
		if err := bo.Wait(ctx); err != nil {
			return err
		}
	}
}

// lost records the end of connection c.
func (d *Device) lost(c *conn) {
	err := c.err()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c != c {
		return
	}
	d.c = nil
	if d.state == StateConnected {
		d.setStateLocked(StateDisconnected)
	}
	d.stats.Losses++
	d.stats.LastLoss = time.Now()
	if err != nil {
		d.stats.LastLossErr = err.Error()
	}
	if d.dirty {
		d.syncLost = true
	}
	d.log.Warn("iscsi: connection lost", "conn", c.id, "err", err)
}

func (d *Device) setStateLocked(s State) {
	if d.state == s {
		return
	}
	prev := d.state
	d.state = s
	if s == StateConnected {
		close(d.up)
	} else if prev == StateConnected {
		d.up = make(chan struct{})
	}
	close(d.changed)
	d.changed = make(chan struct{})
}

// connect dials, logs in, and brings the LUN up: TEST UNIT READY (through unit
// attentions), INQUIRY and READ CAPACITY(16).
func (d *Device) connect(ctx context.Context) error {
	d.mu.Lock()
	if d.state == StateClosed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.gen++
	gen := d.gen
	d.mu.Unlock()

	nc, res, err := dialLogin(ctx, &d.cfg, &d.sid)
	if err != nil {
		return err
	}
	c := newConn(nc, res, d.cfg.LUN, d.cfg.TaskTimeout, d.log, gen)
	fail := func(err error) error {
		c.kill(err)
		return err
	}
	var scsiErr *SCSIError
	for i := 0; ; i++ {
		_, err := c.scsi(cdbTestUnitReady(), nil, nil)
		if err == nil {
			break
		}
		if !errors.As(err, &scsiErr) || !scsiErr.retryable() || i >= 10 {
			return fail(fmt.Errorf("iscsi: TEST UNIT READY: %w", err))
		}
		time.Sleep(time.Duration(i) * 10 * time.Millisecond)
	}
	inqBuf := make([]byte, 96)
	n, err := c.scsi(cdbInquiry(false, 0, uint16(len(inqBuf))), inqBuf, nil)
	if err != nil {
		return fail(fmt.Errorf("iscsi: INQUIRY: %w", err))
	}
	inq, err := parseInquiry(inqBuf[:n])
	if err != nil {
		return fail(err)
	}
	if inq.DeviceType != 0 {
		return fail(fmt.Errorf("iscsi: LUN %d is peripheral device type %#x, not a disk", d.cfg.LUN, inq.DeviceType))
	}
	sn := make([]byte, 255)
	if n, err := c.scsi(cdbInquiry(true, 0x80, uint16(len(sn))), sn, nil); err == nil && n > 4 {
		l := min(int(sn[3]), n-4)
		inq.Serial = string(trimSpaces(sn[4 : 4+l]))
	} else if errors.Is(err, ErrConnectionLost) {
		return err
	}
	capBuf := make([]byte, 32)
	n, err = c.scsi(cdbReadCapacity16(), capBuf, nil)
	if err != nil {
		return fail(fmt.Errorf("iscsi: READ CAPACITY(16): %w", err))
	}
	capacity, err := parseCapacity16(capBuf[:n])
	if err != nil {
		return fail(err)
	}

	d.mu.Lock()
	if d.state == StateClosed {
		d.mu.Unlock()
		c.logout(time.Second)
		return ErrClosed
	}
	if d.capacity.BlockSize != 0 && d.capacity != capacity {
		d.log.Warn("iscsi: LUN changed size across re-login", "was", d.capacity, "now", capacity)
	}
	old := d.c
	d.c, d.capacity, d.inq, d.params = c, capacity, inq, res.params
	d.stats.Logins++
	d.stats.LastLogin = time.Now()
	d.setStateLocked(StateConnected)
	d.mu.Unlock()
	if old != nil {
		old.kill(errors.New("replaced by a new login"))
	}
	go c.keepalive(d.cfg.NOPInterval)
	d.log.Info("iscsi: logged in", "conn", gen, "blocks", capacity.Blocks, "block_size", capacity.BlockSize,
		"header_digest", res.params.HeaderDigest, "data_digest", res.params.DataDigest,
		"immediate_data", res.params.ImmediateData, "initial_r2t", res.params.InitialR2T,
		"first_burst", res.params.FirstBurstLength, "max_burst", res.params.MaxBurstLength,
		"target_max_recv", res.params.TargetMaxRecvDSL)
	return nil
}

func trimSpaces(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	return b
}

// dialLogin opens a TCP connection to the portal and logs in, following one
// login redirection.
func dialLogin(ctx context.Context, cfg *Config, sid *sessionID) (net.Conn, *loginResult, error) {
	addr := cfg.Portal
	for hop := 0; ; hop++ {
		nc, err := dialStaggered(ctx, addr, cfg.DialTimeout, cfg.DialTimeout/4)
		if err != nil {
			return nil, nil, fmt.Errorf("iscsi: dial %s: %w", addr, err)
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
			tc.SetKeepAlive(false) // NOP-Out pings do this job, faster
		}
		stop := context.AfterFunc(ctx, func() { nc.Close() })
		res, err := login(nc, cfg, sid)
		stop()
		if err == nil {
			return nc, res, nil
		}
		nc.Close()
		var re *redirectError
		if errors.As(err, &re) && hop == 0 {
			if a, ok := parseTargetAddress(re.addr); ok {
				addr = a
				continue
			}
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
}

// errNoAnswer is a connect that neither succeeded nor failed in time: a
// dropped SYN, usually.
var errNoAnswer = errors.New("no answer")

// dialStaggered connects to addr within total, starting a fresh connect every
// `every` while the earlier ones hang. A dropped SYN is otherwise retried by the
// kernel only after 1 s, 3 s, 7 s: with fresh attempts, a network that comes
// back is noticed within `every`. A connect that fails outright (refused,
// unreachable) ends the round at once, so the caller's backoff applies.
func dialStaggered(ctx context.Context, addr string, total, every time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, total)
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result)
	pending := 0
	defer func() {
		cancel()
		// Late connects that won a race we no longer run are closed.
		go func(n int) {
			for ; n > 0; n-- {
				if r := <-ch; r.c != nil {
					r.c.Close()
				}
			}
		}(pending)
	}()
	launch := func() {
		pending++
		go func() {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			ch <- result{c, err}
		}()
	}
	tick := time.NewTicker(max(every, time.Millisecond))
	defer tick.Stop()
	launch()
	for {
		select {
		case r := <-ch:
			pending--
			if r.err == nil {
				return r.c, nil
			}
			if pending == 0 {
				if ctx.Err() != nil && errors.Is(r.err, context.DeadlineExceeded) {
					return nil, fmt.Errorf("%w within %v", errNoAnswer, total)
				}
				return nil, r.err
			}
		case <-tick.C:
			if ctx.Err() == nil {
				launch()
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%w within %v", errNoAnswer, total)
		}
	}
}

// parseTargetAddress turns "host:port,tpgt" or "[v6]:port,tpgt" into host:port.
func parseTargetAddress(v string) (string, bool) {
	if i := lastIndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	if _, _, err := net.SplitHostPort(v); err == nil {
		return v, true
	}
	if v != "" {
		return net.JoinHostPort(v, "3260"), true
	}
	return "", false
}

func lastIndexByte(s string, c byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// current returns the logged-in connection, or an error wrapping
// ErrReconnecting or ErrClosed.
func (d *Device) current() (*conn, error) {
	d.mu.Lock()
	c := d.c
	d.mu.Unlock()
	if c != nil {
		select {
		case <-c.dead:
			d.lost(c) // Run does this too; a caller may not run Run
		default:
			return c, nil
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.state == StateClosed:
		return nil, ErrClosed
	case d.c != nil:
		return d.c, nil
	case d.stats.LastLossErr != "":
		return nil, fmt.Errorf("%w (since %s: %s)", ErrReconnecting, d.stats.LastLoss.Format(time.TimeOnly), d.stats.LastLossErr)
	}
	return nil, ErrReconnecting
}

// do runs one command on the current connection, retrying commands the target
// did not execute (unit attention after a re-login, busy, task set full).
func (d *Device) do(cdb, rd, wr []byte) (int, error) {
	for attempt := 0; ; attempt++ {
		c, err := d.current()
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				d.io.errs.Add(1) // refused: the connection is lost (IOStats.Errors)
			}
			return 0, err
		}
		select {
		case d.sem <- struct{}{}:
		case <-c.dead:
			d.io.errs.Add(1)
			return 0, c.err()
		}
		start := time.Now()
		n, err := c.scsi(cdb, rd, wr)
		<-d.sem
		var se *SCSIError
		if err != nil && errors.As(err, &se) && se.retryable() && attempt < 8 {
			time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
			continue
		}
		d.io.observe(time.Since(start), err != nil)
		return n, err
	}
}

// BlockSize is the LUN's logical block size (0 before the first login).
func (d *Device) BlockSize() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int(d.capacity.BlockSize)
}

// Size is the LUN's size in bytes (0 before the first login).
func (d *Device) Size() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(d.capacity.Blocks) * int64(d.capacity.BlockSize)
}

// Inquiry returns the LUN's INQUIRY data from the last login.
func (d *Device) Inquiry() Inquiry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inq
}

// State returns the connection state.
func (d *Device) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

// Changed returns a channel closed at the next state change.
func (d *Device) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

// WaitConnected blocks until the device is logged in, ctx ends, or it is closed.
func (d *Device) WaitConnected(ctx context.Context) error {
	for {
		d.mu.Lock()
		up, ch, st := d.up, d.changed, d.state
		d.mu.Unlock()
		if st == StateClosed {
			return ErrClosed
		}
		select {
		case <-up:
			return nil
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats returns counters and the negotiated parameters.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	s.State = d.state.String()
	p := d.params
	s.Params = Params{p.HeaderDigest, p.DataDigest, p.MaxRecvDSL, p.TargetMaxRecvDSL, p.MaxBurstLength,
		p.FirstBurstLength, p.MaxOutstandingR2T, p.InitialR2T, p.ImmediateData}
	return s
}

// chunk is one command's share of a larger I/O.
type chunk struct {
	lba    uint64
	off, n int // within the caller's buffer
}

func (d *Device) chunks(lba uint64, n, bs int) []chunk {
	max := max(d.cfg.MaxTransfer/bs*bs, bs)
	var out []chunk
	for off := 0; off < n; off += max {
		l := min(max, n-off)
		out = append(out, chunk{lba: lba + uint64(off/bs), off: off, n: l})
	}
	return out
}

// parallel runs fn over the chunks concurrently and returns how many leading
// bytes completed and the first error in buffer order.
func parallel(cs []chunk, fn func(chunk) error) (int, error) {
	if len(cs) == 1 {
		if err := fn(cs[0]); err != nil {
			return 0, err
		}
		return cs[0].n, nil
	}
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(c)
		}()
	}
	wg.Wait()
	done := 0
	for i, c := range cs {
		if errs[i] != nil {
			return done, errs[i]
		}
		done += c.n
	}
	return done, nil
}

// ReadAt reads len(p) bytes at off. Unaligned reads go through a bounce buffer.
// At the end of the LUN it returns io.EOF, as io.ReaderAt does.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if _, err := d.current(); errors.Is(err, ErrClosed) {
		return 0, err
	}
	bs, size := int64(d.BlockSize()), d.Size()
	if bs == 0 {
		return 0, ErrReconnecting
	}
	if off < 0 {
		return 0, fmt.Errorf("iscsi: negative offset %d", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	want := p
	var eof error
	if int64(len(p)) > size-off {
		want, eof = p[:size-off], io.EOF
	}
	if len(want) == 0 {
		return 0, eof
	}
	start, end := off/bs*bs, (off+int64(len(want))+bs-1)/bs*bs
	buf := want
	if start != off || end-start != int64(len(want)) {
		buf = make([]byte, end-start)
	}
	n, err := parallel(d.chunks(uint64(start/bs), len(buf), int(bs)), func(c chunk) error {
		_, err := d.do(cdbRW16(opRead16, c.lba, uint32(c.n/int(bs)), false), buf[c.off:c.off+c.n], nil)
		return err
	})
	if &buf[0] != &want[0] {
		skip := int(off - start)
		n = max(0, min(n-skip, len(want)))
		copy(want, buf[skip:skip+n])
	}
	if err != nil {
		return n, fmt.Errorf("iscsi: read %d bytes at %d: %w", len(want), off, err)
	}
	return n, eof
}

// WriteAt writes p at off; both must be multiples of BlockSize. Unless the
// device was configured WriteBack, the write is durable (FUA) when WriteAt
// returns nil. An error wrapping ErrConnectionLost leaves the outcome unknown;
// one wrapping ErrReconnecting means nothing was sent.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if _, err := d.current(); errors.Is(err, ErrClosed) {
		return 0, err
	}
	bs, size := int64(d.BlockSize()), d.Size()
	if bs == 0 {
		return 0, ErrReconnecting
	}
	if off < 0 || off%bs != 0 || int64(len(p))%bs != 0 {
		return 0, fmt.Errorf("%w: %d bytes at %d (block size %d)", ErrUnaligned, len(p), off, bs)
	}
	if off+int64(len(p)) > size {
		return 0, fmt.Errorf("%w: %d bytes at %d, size %d", ErrOutOfRange, len(p), off, size)
	}
	if len(p) == 0 {
		return 0, nil
	}
	fua := !d.cfg.WriteBack
	if !fua {
		d.mu.Lock()
		d.dirty = true
		d.mu.Unlock()
	}
	n, err := parallel(d.chunks(uint64(off/bs), len(p), int(bs)), func(c chunk) error {
		_, err := d.do(cdbRW16(opWrite16, c.lba, uint32(c.n/int(bs)), fua), nil, p[c.off:c.off+c.n])
		return err
	})
	if err != nil {
		return n, fmt.Errorf("iscsi: write %d bytes at %d: %w", len(p), off, err)
	}
	return n, nil
}

// Sync makes every completed WriteAt durable. With FUA writes (the default)
// each write was durable when it completed, so Sync returns nil at once. With
// WriteBack it sends SYNCHRONIZE CACHE; if a connection was lost since the last
// successful Sync, writes acknowledged only by the target's cache may be gone,
// so Sync returns an error wrapping ErrConnectionLost once.
func (d *Device) Sync() error {
	d.mu.Lock()
	closed := d.state == StateClosed
	wb, lost := d.cfg.WriteBack, d.syncLost
	d.syncLost = false
	if wb && !lost {
		d.dirty = false // writes from here on need a later Sync
	}
	d.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !wb {
		return nil
	}
	if lost {
		return fmt.Errorf("iscsi: sync: %w: writes since the last sync may be lost", ErrConnectionLost)
	}
	if _, err := d.do(cdbSyncCache10(), nil, nil); err != nil {
		d.mu.Lock()
		d.dirty = true
		d.mu.Unlock()
		return fmt.Errorf("iscsi: sync: %w", err)
	}
	return nil
}

// Close logs out and stops the background re-login. It is idempotent.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.state == StateClosed {
		d.mu.Unlock()
		return nil
	}
	c := d.c
	d.c = nil
	d.setStateLocked(StateClosed)
	devices.Delete(d)
	cancel, done := d.runCancel, d.runDone
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	if c != nil {
		c.logout(time.Second)
	}
	return nil
}

// blockDevice is storage.BlockDevice, restated here because iscsi must not
// import storage; the assertion below keeps Device in step with it.
type blockDevice interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Size() int64
	BlockSize() int
}

var _ blockDevice = (*Device)(nil)
