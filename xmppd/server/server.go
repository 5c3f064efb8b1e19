// Package server is xmppd's composition root: it builds storage, accounts, the
// router (module.Host), the feature modules, the c2s listeners and the admin socket
// from a config.Config, starts them in that order and stops them in reverse under a
// deadline (jackal-style Start/Stop components).
//
// It owns wiring only; protocol logic lives in c2s, router and the modules. Nothing
// in xmppd may import it but the main package and tests.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"xedge/storage"
	"xedge/xmppd/accounts"
	"xedge/xmppd/admin"
	"xedge/xmppd/c2s"
	"xedge/xmppd/config"
	"xedge/xmppd/mod/all"
	"xedge/xmppd/module"
	"xedge/xmppd/router"
	"xedge/xmppd/tlscert"
	"xedge/xmppd/version"
	"xedge/xmppd/xmlstream"
)

type component struct {
	name  string
	start func(context.Context) error
	stop  func(context.Context) error
}

// StoreWithLifecycle is a storage.Store the server starts and stops.
type StoreWithLifecycle interface {
	storage.Store
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Server is a configured xmppd.
type Server struct {
	cfg     *config.Config
	log     *slog.Logger
	level   *slog.LevelVar
	started time.Time

	Store    StoreWithLifecycle
	Router   *router.Router
	Accounts *accounts.Accounts
	C2S      *c2s.Server
	Admin    *admin.Server
	Modules  []module.Module

	comps   []component
	running []component
}

// New builds a server from cfg; level is the runtime log level `xmppctl loglevel`
// changes (may be nil).
func New(cfg *config.Config, log *slog.Logger, level *slog.LevelVar) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if level == nil {
		level = new(slog.LevelVar)
	}
	s := &Server{cfg: cfg, log: log, level: level}
	st, err := newStore(cfg, log)
	if err != nil {
		return nil, err
	}
	s.Store = st
	s.Router = router.New(router.Config{Domain: cfg.Domain, Hosts: cfg.HostNames(), Node: cfg.Node, Store: s.Store, Logger: log})
	s.Accounts = accounts.New(s.Store, cfg.Domain, func(ctx context.Context, user string) {
		s.Router.Run(ctx, module.EvUserRemoved, &module.EventData{User: user})
	})
	s.Router.SetAccounts(s.Accounts)

	certFile, keyFile := cfg.Cert, cfg.Key
	if certFile == "" {
		var created bool
		var err error
		certFile, keyFile, created, err = tlscert.EnsureSelfSigned(filepath.Join(cfg.Data, "tls"), cfg.Domain)
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		if created {
			log.Info("made a self-signed TLS certificate", "component", "server", "cert", certFile)
		}
	}
	tlsCfg, err := tlscert.Config(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	lim := xmlstream.DefaultLimits()
	lim.MaxStanza, lim.MaxDepth = cfg.MaxStanza, cfg.MaxDepth
	s.C2S = c2s.New(c2s.Config{
		Domain: cfg.Domain, TLS: tlsCfg, Limits: lim, Shaper: cfg.C2SShaper,
		Keepalive: cfg.Keepalive, IdleTimeout: cfg.IdleTimeout, AuthTimeout: cfg.AuthTimeout,
		SMTimeout: cfg.SMTimeout, SMMaxQueue: cfg.SMMaxQueue, SendQueue: cfg.SendQueue,
		AllowRegistration: cfg.AllowRegistration, AllowPlaintext: !cfg.RequireTLS, AuthFailMax: cfg.AuthFailMax, AuthFailTime: cfg.AuthFailTime,
		RegLimit: cfg.RegLimit, RegWindow: cfg.RegWindow,
		IdentityCategory: "server", IdentityType: "im", IdentityName: "xedge",
		Logger: log,
	}, s.Router, s.Accounts)
	if cfg.C2S != "" && !cfg.Witness {
		s.C2S.Listen(cfg.C2S, false)
	}
	if cfg.C2STLS != "" && !cfg.Witness {
		s.C2S.Listen(cfg.C2STLS, true)
	}
	s.Admin = admin.New(cfg.AdminSocket, log)
	s.adminHandlers()
	s.Modules = all.Modules(all.Options{OfflineMax: cfg.MaxOffline})

	staged, err := s.buildFeatures()
	if err != nil {
		return nil, err
	}
	lock := &dataLock{path: filepath.Join(cfg.Data, "xmppd.lock")}
	s.comps = append(s.comps, component{"data lock", lock.Start, lock.Stop})
	s.comps = append(s.comps, staged[BeforeStorage]...)
	s.comps = append(s.comps, component{"storage", s.Store.Start, s.Store.Stop})
	s.comps = append(s.comps, staged[AfterStorage]...)
	s.comps = append(s.comps, component{"accounts", s.Accounts.Start, s.Accounts.Stop})
	for _, m := range s.Modules {
		m := m
		s.comps = append(s.comps, component{"module " + m.Name(),
			func(ctx context.Context) error { return m.Start(ctx, s.Router) }, m.Stop})
	}
	s.comps = append(s.comps, staged[AfterModules]...)
	if !cfg.Witness { // a witness votes in the cluster and serves no XMPP
		s.comps = append(s.comps, component{"c2s", s.C2S.Start, s.C2S.Stop})
	}
	s.comps = append(s.comps, staged[AfterC2S]...)
	s.comps = append(s.comps, component{"admin", s.Admin.Start, s.Admin.Stop})
	return s, nil
}

// Stage says where a feature's component starts: components start in the order
// data lock, BeforeStorage, storage, AfterStorage, accounts, modules,
// AfterModules, c2s, AfterC2S, admin, and stop in reverse.
type Stage int

const (
	BeforeStorage Stage = iota // e.g. discovery: find seeds before the store joins
	AfterStorage               // e.g. the cluster bus: needs the store's transport
	AfterModules               // e.g. VIP, DNS publishing: need a serving node
	AfterC2S                   // e.g. HTTP listener, metrics
	numStages
)

// Feature is an optional part of the server built in a file of its own
// (cluster bus, discovery, VIPs, DNS, HTTP): called by New after the core
// parts exist, it may register admin handlers and returns the components to
// start, each at its stage. It registers itself from its file's init with
// registerFeature, so adding a feature does not edit this file.
type Feature struct {
	Name  string
	Build func(s *Server) ([]StagedComponent, error)
}

// StagedComponent is a component started at a stage.
type StagedComponent struct {
	Stage Stage
	Name  string
	Start func(context.Context) error
	Stop  func(context.Context) error
}

var features []Feature

func registerFeature(f Feature) { features = append(features, f) }

// Config returns the server's configuration (read-only for features).
func (s *Server) Config() *config.Config { return s.cfg }

// Log returns the server's logger.
func (s *Server) Log() *slog.Logger { return s.log }

func (s *Server) buildFeatures() ([numStages][]component, error) {
	var out [numStages][]component
	for _, f := range features {
		cs, err := f.Build(s)
		if err != nil {
			return out, fmt.Errorf("server: %s: %w", f.Name, err)
		}
		for _, c := range cs {
			if c.Stage < 0 || c.Stage >= numStages {
				return out, fmt.Errorf("server: %s: component %s has no valid stage", f.Name, c.Name)
			}
			out[c.Stage] = append(out[c.Stage], component{c.Name, c.Start, c.Stop})
		}
	}
	return out, nil
}

// Start starts every component in order; on failure the started ones are stopped.
func (s *Server) Start(ctx context.Context) error {
	s.started = time.Now()
	for _, c := range s.comps {
		if err := c.start(ctx); err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), s.cfg.StopTimeout)
			defer cancel()
			s.stopRunning(sctx)
			return fmt.Errorf("start %s: %w", c.name, err)
		}
		s.running = append(s.running, c)
	}
	s.log.Info("xmppd started", "component", "server", "version", version.Version, "domain", s.cfg.Domain)
	return nil
}

// Stop stops the components in reverse order; ctx bounds the whole stop.
func (s *Server) Stop(ctx context.Context) error {
	return s.stopRunning(ctx)
}

func (s *Server) stopRunning(ctx context.Context) error {
	var errs []error
	for i := len(s.running) - 1; i >= 0; i-- {
		c := s.running[i]
		if err := c.stop(ctx); err != nil {
			s.log.Warn("stop failed", "component", "server", "part", c.name, "err", err)
			errs = append(errs, fmt.Errorf("stop %s: %w", c.name, err))
		}
	}
	s.running = nil
	return errors.Join(errs...)
}

// Banner writes where the server listens and how to add a user.
func (s *Server) Banner(w io.Writer) {
	fmt.Fprintf(w, "xmppd %s serving XMPP domain %q (node %s)\n", version.Version, s.cfg.Domain, s.cfg.Node)
	for _, a := range s.C2S.Addrs() {
		kind, addr, _ := strings.Cut(a, " ")
		if kind == "starttls" {
			fmt.Fprintf(w, "  client connections (STARTTLS):        %s\n", addr)
		} else {
			fmt.Fprintf(w, "  client connections (direct TLS, 0368): %s\n", addr)
		}
	}
	if s.cfg.Witness {
		fmt.Fprintln(w, "  witness: votes in the cluster, serves no XMPP clients")
	}
	if s.cfg.Clustered() {
		st := s.Store.Status()
		fmt.Fprintf(w, "  cluster:                              %s (leader %s, role %s, storage %s)\n", s.cfg.ClusterAddr, st.Leader, st.Role, st.Mode)
	}
	fmt.Fprintf(w, "  admin socket:                         %s\n", s.cfg.AdminSocket)
	fmt.Fprintf(w, "  data:                                 %s\n", s.cfg.Data)
	fmt.Fprintf(w, "Add a user:\n  bin/xmppctl --socket %s register alice secret\n", s.cfg.AdminSocket)
	if s.cfg.AllowRegistration {
		fmt.Fprintln(w, "  or register in-band (XEP-0077) from an XMPP client.")
	}
	fmt.Fprintln(w, "Stop with Ctrl-C or SIGTERM.")
}
