package auth

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"xedge/internal/backoff"
	"xedge/storage"
)

// ExternalConfig configures auth_method external: ejabberd's extauth protocol
// spoken to a pool of long-running operator scripts. Each request is one line
// "auth:User:Server:Password", "isuser:User:Server", "setpass:User:Server:Password",
// "tryregister:User:Server:Password" or "removeuser:User:Server", sent with a
// 2-byte big-endian length before it; the script answers 2 bytes of length (2)
// and 2 bytes of result (1 true, 0 false). Scripts written for ejabberd work
// unchanged.
type ExternalConfig struct {
	Program  string        // extauth-program: the command line (split on blanks, like ejabberd)
	PoolSize int           // extauth-pool-size: scripts run at once (default 1)
	Timeout  time.Duration // extauth-timeout: bound of one request (0: the service's)
}

// encodeRequest encodes one extauth request: the fields joined by ':' after a
// 2-byte big-endian length.
func encodeRequest(fields ...string) ([]byte, error) {
	line := strings.Join(fields, ":")
	if len(line) > 0xffff {
		return nil, fmt.Errorf("extauth request of %d bytes: longer than the protocol's 65535", len(line))
	}
	b := make([]byte, 2, 2+len(line))
	binary.BigEndian.PutUint16(b, uint16(len(line)))
	return append(b, line...), nil
}

// errProtocol is a reply that does not follow the protocol.
var errProtocol = errors.New("extauth: malformed reply")

// readReply reads one extauth reply: a 2-byte length (2) then the 2-byte result.
func readReply(r io.Reader) (bool, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:2]); err != nil {
		return false, err
	}
	if n := binary.BigEndian.Uint16(b[:2]); n != 2 {
		return false, fmt.Errorf("%w: length %d, want 2", errProtocol, n)
	}
	if _, err := io.ReadFull(r, b[2:]); err != nil {
		return false, fmt.Errorf("%w: %w", errProtocol, err)
	}
	switch binary.BigEndian.Uint16(b[2:]) {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, fmt.Errorf("%w: result %d, want 0 or 1", errProtocol, binary.BigEndian.Uint16(b[2:]))
}

type externalBackend struct {
	argv    []string
	domain  string
	timeout time.Duration
	log     *slog.Logger

	idle    chan *worker // workers not serving a request
	workers []*worker

	mu      sync.Mutex
	stopped bool
}

// worker is one script process, serving one request at a time.
type worker struct {
	b  *externalBackend
	id int

	mu        sync.Mutex // held during a request and by stop
	cmd       *exec.Cmd
	in, out   *os.File // our ends of the script's stdin and stdout
	rd        *bufio.Reader
	exited    chan struct{} // closed when the process has exited
	retry     backoff.Backoff
	notBefore time.Time // no restart before this (a script that keeps dying)
}

func newExternal(cfg ExternalConfig, domain string, timeout time.Duration, log *slog.Logger) (*externalBackend, error) {
	argv := strings.Fields(cfg.Program)
	if len(argv) == 0 {
		return nil, errors.New("auth method external needs extauth-program")
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 1
	}
	if cfg.Timeout > 0 {
		timeout = cfg.Timeout
	}
	b := &externalBackend{argv: argv, domain: domain, timeout: timeout, log: log.With("program", argv[0]),
		idle: make(chan *worker, cfg.PoolSize)}
	for i := range cfg.PoolSize {
		w := &worker{b: b, id: i, retry: backoff.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}}
		b.workers = append(b.workers, w)
		b.idle <- w
	}
	return b, nil
}

// Start spawns the scripts. One that does not start is logged and started
// again by the first request it serves.
func (b *externalBackend) Start(context.Context) error {
	for _, w := range b.workers {
		w.mu.Lock()
		err := w.start()
		w.mu.Unlock()
		if err != nil {
			b.log.Warn("extauth script did not start; retried on the next request", "err", err)
			return nil
		}
	}
	return nil
}

// Stop closes each script's stdin (ejabberd's scripts end on end of input),
// then kills what is still running when ctx ends or after a second.
func (b *externalBackend) Stop(ctx context.Context) error {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	for _, w := range b.workers {
		w.mu.Lock()
		w.stop(ctx)
		w.mu.Unlock()
	}
	return nil
}

func (b *externalBackend) Check(ctx context.Context, user, password string) (bool, error) {
	return b.request(ctx, "auth", user, b.domain, password)
}

func (b *externalBackend) Exists(ctx context.Context, user string) (bool, error) {
	return b.request(ctx, "isuser", user, b.domain)
}

func (b *externalBackend) Create(ctx context.Context, user, password string) error {
	ok, err := b.request(ctx, "tryregister", user, b.domain, password)
	if err == nil && !ok {
		err = fmt.Errorf("extauth: tryregister %q refused by the script: %w", user, storage.ErrConflict)
	}
	return err
}

func (b *externalBackend) SetPassword(ctx context.Context, user, password string) error {
	ok, err := b.request(ctx, "setpass", user, b.domain, password)
	if err == nil && !ok {
		err = fmt.Errorf("extauth: setpass %q refused by the script", user)
	}
	return err
}

func (b *externalBackend) Delete(ctx context.Context, user string) error {
	ok, err := b.request(ctx, "removeuser", user, b.domain)
	if err == nil && !ok {
		err = fmt.Errorf("extauth: removeuser %q refused by the script", user)
	}
	return err
}

// request sends one request to an idle script and reads its answer. A script
// found dead is started again (at most once per request, and not faster than
// its backoff allows); a script that does not answer in time is killed, since
// its stream is out of step.
func (b *externalBackend) request(ctx context.Context, fields ...string) (bool, error) {
	msg, err := encodeRequest(fields...)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	var w *worker
	select {
	case w = <-b.idle:
	case <-ctx.Done():
		return false, fmt.Errorf("%w: all %d extauth scripts busy: %w", ErrUnavailable, len(b.workers), ctx.Err())
	}
	defer func() { b.idle <- w }()
	w.mu.Lock()
	defer w.mu.Unlock()
	b.mu.Lock()
	stopped := b.stopped
	b.mu.Unlock()
	if stopped {
		return false, fmt.Errorf("%w: stopped", ErrUnavailable)
	}
	for attempt := 0; ; attempt++ {
		if !w.alive() {
			if time.Now().Before(w.notBefore) {
				return false, fmt.Errorf("%w: extauth script exited; restarting it after a pause", ErrUnavailable)
			}
			if err := w.start(); err != nil {
				return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
		}
		ok, sent, err := w.exchange(ctx, msg)
		if err == nil {
			w.retry.Reset()
			return ok, nil
		}
		w.kill()
		if sent || attempt > 0 || ctx.Err() != nil {
			return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		// The script had died before this request: one more try on a fresh one.
	}
}

func (w *worker) alive() bool {
	if w.cmd == nil {
		return false
	}
	select {
	case <-w.exited:
		return false
	default:
		return true
	}
}

// start spawns the script (w.mu held), releasing what is left of a previous one.
func (w *worker) start() error {
	w.release()
	w.notBefore = time.Now().Add(w.retry.Next())
	inR, inW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("extauth: pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return fmt.Errorf("extauth: pipe: %w", err)
	}
	cmd := exec.Command(w.b.argv[0], w.b.argv[1:]...)
	cmd.Stdin, cmd.Stdout = inR, outW
	errR, err := cmd.StderrPipe()
	if err == nil {
		err = cmd.Start()
	}
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return fmt.Errorf("extauth: start %s: %w", w.b.argv[0], err)
	}
	log := w.b.log.With("worker", w.id, "pid", cmd.Process.Pid)
	exited := make(chan struct{})
	go func() {
		// The script's stderr goes to the log, a line at a time (long lines cut).
		sc := bufio.NewScanner(errR)
		sc.Buffer(make([]byte, 4096), 4096)
		for sc.Scan() {
			log.Info("extauth script: " + sc.Text())
		}
		io.Copy(io.Discard, errR)
		err := cmd.Wait()
		log.Info("extauth script exited", "status", err)
		close(exited)
		w.restartLater(cmd)
	}()
	w.cmd, w.in, w.out, w.rd, w.exited = cmd, inW, outR, bufio.NewReaderSize(outR, 64), exited
	log.Debug("extauth script started")
	return nil
}

// exchange writes msg and reads the answer before ctx ends; sent reports whether
// the script may have seen the request (anything but a write that failed at once).
func (w *worker) exchange(ctx context.Context, msg []byte) (ok, sent bool, err error) {
	if dl, has := ctx.Deadline(); has {
		w.in.SetWriteDeadline(dl)
		w.out.SetReadDeadline(dl)
	}
	if _, err := w.in.Write(msg); err != nil {
		return false, false, fmt.Errorf("extauth: write: %w", err)
	}
	ok, err = readReply(w.rd)
	if errors.Is(err, io.EOF) {
		// The script ended without reading: most likely it had died before.
		return false, false, fmt.Errorf("extauth: script exited: %w", err)
	}
	if err != nil {
		return false, true, fmt.Errorf("extauth: read: %w", err)
	}
	return ok, true, nil
}

// restartLater starts the script again after it exited by itself (not killed
// by us, not at stop), once its restart pause has passed, so that the next
// request finds it running.
func (w *worker) restartLater(cmd *exec.Cmd) {
	w.mu.Lock()
	d := time.Until(w.notBefore)
	w.mu.Unlock()
	time.AfterFunc(max(d, 0), func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.b.mu.Lock()
		stopped := w.b.stopped
		w.b.mu.Unlock()
		if stopped || w.cmd != cmd || time.Now().Before(w.notBefore) {
			return // stopping, killed or already restarted: the request path decides
		}
		if err := w.start(); err != nil {
			w.b.log.Warn("extauth script did not start again; retried on the next request", "err", err)
		}
	})
}

// release closes our ends of the pipes of a script that has exited or is
// being killed (w.mu held).
func (w *worker) release() {
	if w.cmd == nil {
		return
	}
	w.in.Close()
	w.out.Close()
	w.cmd = nil
}

// kill ends the process now (w.mu held).
func (w *worker) kill() {
	if w.cmd == nil {
		return
	}
	w.cmd.Process.Kill()
	exited := w.exited
	w.release()
	t := time.NewTimer(2 * time.Second) // a child of the script may hold stderr open
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
	}
}

// stop closes the script's stdin and waits for its exit, killing it if it
// lingers (w.mu held).
func (w *worker) stop(ctx context.Context) {
	if w.cmd == nil {
		return
	}
	w.in.Close()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-w.exited:
	case <-t.C:
	case <-ctx.Done():
	}
	w.kill()
}
