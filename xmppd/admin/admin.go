// Package admin is xmppd's admin API: a unix socket (mode 0600, removed on stop)
// speaking line-delimited JSON, one Request per line answered by one Response line.
// The composition root registers one handler per command; xmppctl (package ctl) is
// the client.
//
// It owns the socket and the wire protocol; it must not import other xmppd packages,
// so the client side (ctl, the appliance's console shell) stays small.
package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Request is one command.
type Request struct {
	Cmd  string   `json:"cmd"`
	Args []string `json:"args,omitempty"`
}

// Response answers a Request: OK with Result, or an Error message.
type Response struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Handler runs a command.
type Handler func(ctx context.Context, args []string) (any, error)

// MaxLine bounds a request line.
const MaxLine = 64 << 10

// Server serves the admin socket.
type Server struct {
	path string
	log  *slog.Logger

	mu       sync.Mutex
	handlers map[string]Handler
	ln       net.Listener
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

// New returns a server for the socket at path.
func New(path string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{path: path, log: log.With("component", "admin"), handlers: map[string]Handler{}, conns: map[net.Conn]struct{}{}}
}

// Handle registers a command handler.
func (s *Server) Handle(cmd string, h Handler) {
	s.mu.Lock()
	s.handlers[cmd] = h
	s.mu.Unlock()
}

// Commands lists the registered command names.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.handlers {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Path is the socket path.
func (s *Server) Path() string { return s.path }

// Start listens on the socket (mode 0600). A stale socket file left by a dead
// process is replaced; a live one is an error.
func (s *Server) Start(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if _, err := os.Stat(s.path); err == nil {
		if c, err := net.DialTimeout("unix", s.path, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("admin: socket %s is in use by another process", s.path)
		}
		if err := os.Remove(s.path); err != nil {
			return fmt.Errorf("admin: remove stale socket: %w", err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", s.path)
	if err != nil {
		return fmt.Errorf("admin: listen: %w", err)
	}
	if err := os.Chmod(s.path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("admin: chmod: %w", err)
	}
	s.ln = ln
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.accept()
	return nil
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *Server) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), MaxLine)
	enc := json.NewEncoder(c)
	for sc.Scan() {
		var req Request
		var resp Response
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp.Error = "bad request: " + err.Error()
		} else {
			resp = s.run(req)
		}
		if err := enc.Encode(resp); err != nil {
			return
		}
	}
}

func (s *Server) run(req Request) (resp Response) {
	s.mu.Lock()
	h := s.handlers[req.Cmd]
	s.mu.Unlock()
	if h == nil {
		return Response{Error: fmt.Sprintf("unknown command %q", req.Cmd)}
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("admin command panicked", "cmd", req.Cmd, "panic", p)
			resp = Response{Error: fmt.Sprintf("internal error in %s", req.Cmd)}
		}
	}()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	res, err := h(ctx, req.Args)
	if err != nil {
		return Response{Error: err.Error()}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return Response{Error: "encode result: " + err.Error()}
	}
	s.log.Debug("admin command", "cmd", req.Cmd)
	return Response{OK: true, Result: b}
}

// Call runs a registered command in-process (the web admin page uses it) and
// returns its result as the handler made it.
func (s *Server) Call(ctx context.Context, cmd string, args []string) (res any, err error) {
	s.mu.Lock()
	h := s.handlers[cmd]
	s.mu.Unlock()
	if h == nil {
		return nil, fmt.Errorf("unknown command %q", cmd)
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("admin command panicked", "cmd", cmd, "panic", p)
			res, err = nil, fmt.Errorf("internal error in %s", cmd)
		}
	}()
	return h(ctx, args)
}

// Stop closes the socket and its connections and removes the socket file.
func (s *Server) Stop(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	s.cancel()
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin: remove socket: %w", err)
	}
	return nil
}

// Call sends one request over the socket at path and returns the response.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return Response{}, fmt.Errorf("admin: send: %w", err)
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), 64<<20)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return Response{}, fmt.Errorf("admin: read: %w", err)
		}
		return Response{}, errors.New("admin: connection closed without a response")
	}
	var resp Response
	if err := json.Unmarshal(sc.Bytes(), &resp); err != nil {
		return Response{}, fmt.Errorf("admin: decode response: %w", err)
	}
	return resp, nil
}
