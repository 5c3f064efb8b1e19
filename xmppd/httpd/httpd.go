// Package httpd is the node's HTTP listener (xmppd --http): one net/http server
// with a ServeMux on which features mount their handlers (metrics on /metrics,
// the web admin page on /admin/, later WebSocket and HTTP upload), served over
// TLS with the node's certificate or as plain HTTP.
//
// It owns the listener and its lifecycle; it must not import other xmppd
// packages (features hand it their handlers).
package httpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Server is one HTTP listener.
type Server struct {
	addr string
	tls  *tls.Config // nil: plain HTTP
	log  *slog.Logger
	mux  *http.ServeMux

	mu       sync.Mutex
	patterns []string
	ln       net.Listener
	srv      *http.Server
	done     chan struct{}
}

// New returns a listener for addr (host:port; port 0 picks one); tlsCfg nil
// serves plain HTTP.
func New(addr string, tlsCfg *tls.Config, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{addr: addr, tls: tlsCfg, log: log.With("component", "httpd"), mux: http.NewServeMux()}
}

// Handle mounts h on pattern (net/http ServeMux syntax, e.g. "/metrics",
// "GET /admin/"). Call it before Start; a pattern that clashes with another
// one is an error, not a panic.
func (s *Server) Handle(pattern string, h http.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("httpd: %s: %v", pattern, p)
		}
	}()
	s.mux.Handle(pattern, h)
	s.mu.Lock()
	s.patterns = append(s.patterns, pattern)
	s.mu.Unlock()
	return nil
}

// Patterns lists the mounted patterns, sorted.
func (s *Server) Patterns() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]string(nil), s.patterns...)
	sort.Strings(out)
	return out
}

// TLS reports whether the listener serves HTTPS.
func (s *Server) TLS() bool { return s.tls != nil }

// Addr is the listening address once started (else the configured one).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.addr
}

// URL is the base URL of the listener, e.g. https://127.0.0.1:8443.
func (s *Server) URL() string {
	scheme := "http"
	if s.tls != nil {
		scheme = "https"
	}
	return scheme + "://" + s.Addr()
}

// Start listens and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("httpd: listen %s: %w", s.addr, err)
	}
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.tls != nil {
		c := s.tls.Clone()
		c.NextProtos = []string{"h2", "http/1.1"}
		srv.TLSConfig = c
		ln = tls.NewListener(ln, c)
	}
	s.mu.Lock()
	s.ln, s.srv, s.done = ln, srv, make(chan struct{})
	s.mu.Unlock()
	go func() {
		defer close(s.done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	s.log.Info("http listener", "url", s.URL(), "handlers", s.Patterns())
	return nil
}

// Stop closes the listener and waits (until ctx ends) for running requests.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
	}
	<-done
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("httpd: %w", err)
	}
	return nil
}
