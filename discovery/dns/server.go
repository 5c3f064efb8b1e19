package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Server is the embedded authoritative server: one zone, UDP and TCP on the
// same address. It answers from the zone last given to SetZone.
type Server struct {
	addr string
	log  *slog.Logger

	zone    atomic.Pointer[Zone]
	queries atomic.Uint64

	mu      sync.Mutex
	udp     *mdns.Server
	tcp     *mdns.Server
	bound   string
	stopped chan struct{}
}

// NewServer returns a server that will listen on addr (host:port; port 0 picks
// a free port, the same for UDP and TCP).
func NewServer(addr string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{addr: addr, log: log.With("component", "dns")}
}

// SetZone makes z the zone served from now on.
func (s *Server) SetZone(z *Zone) { s.zone.Store(z) }

// Zone returns the zone served now (nil before the first SetZone).
func (s *Server) Zone() *Zone { return s.zone.Load() }

// Addr returns the bound address (after Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bound
}

// Queries returns how many queries were answered.
func (s *Server) Queries() uint64 { return s.queries.Load() }

// Start binds UDP and TCP and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	pc, ln, err := listenBoth(s.addr)
	if err != nil {
		return fmt.Errorf("dns: listen %s: %w", s.addr, err)
	}
	h := mdns.HandlerFunc(s.serveDNS)
	s.mu.Lock()
	s.bound = ln.Addr().String()
	s.udp = &mdns.Server{PacketConn: pc, Handler: h, ReadTimeout: 2 * time.Second}
	s.tcp = &mdns.Server{Listener: ln, Handler: h, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		MaxTCPQueries: 128, IdleTimeout: func() time.Duration { return 8 * time.Second }}
	s.stopped = make(chan struct{})
	udp, tcp, stopped := s.udp, s.tcp, s.stopped
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, srv := range []*mdns.Server{udp, tcp} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Warn("dns listener ended", "addr", s.bound, "err", err)
			}
		}()
	}
	go func() { wg.Wait(); close(stopped) }()
	s.log.Info("dns server listening", "addr", s.bound, "proto", "udp+tcp")
	return nil
}

// Stop closes the listeners and waits for the serving goroutines.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	udp, tcp, stopped := s.udp, s.tcp, s.stopped
	s.udp, s.tcp = nil, nil
	s.mu.Unlock()
	if udp == nil {
		return nil
	}
	var errs []error
	for _, srv := range []*mdns.Server{udp, tcp} {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	select {
	case <-stopped:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dns: stop: %w", err)
	}
	return nil
}

// listenBoth binds UDP and TCP on the same port (for port 0: the port the
// kernel gave UDP, retried a few times if TCP finds it taken).
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	var lastErr error
	for range 8 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		p := port
		if p == "0" {
			p = strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, p))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
		if port != "0" {
			break
		}
	}
	return nil, nil, lastErr
}

// ednsSize is the UDP payload we advertise and accept at most (the DNS flag
// day 2020 value, which avoids IP fragmentation).
const ednsSize = 1232

func (s *Server) serveDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	s.queries.Add(1)
	m := s.respond(r, w.RemoteAddr().Network() == "tcp")
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns write failed", "peer", w.RemoteAddr(), "err", err)
	}
}

// respond builds the answer to r (tcp: no size limit but the protocol's).
func (s *Server) respond(r *mdns.Msg, tcp bool) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = false
	opt := r.IsEdns0()
	size := mdns.MinMsgSize
	if opt != nil {
		if opt.Version() != 0 {
			m.SetRcode(r, mdns.RcodeBadVers)
			m.SetEdns0(ednsSize, false)
			return m
		}
		size = min(max(int(opt.UDPSize()), mdns.MinMsgSize), ednsSize)
	}
	if tcp {
		size = mdns.MaxMsgSize
	}
	z := s.zone.Load()
	switch {
	case r.Opcode != mdns.OpcodeQuery:
		m.SetRcode(r, mdns.RcodeNotImplemented)
	case len(r.Question) != 1:
		m.SetRcode(r, mdns.RcodeFormatError)
	case r.Question[0].Qclass != mdns.ClassINET && r.Question[0].Qclass != mdns.ClassANY:
		m.SetRcode(r, mdns.RcodeRefused)
	case r.Question[0].Qtype == mdns.TypeAXFR || r.Question[0].Qtype == mdns.TypeIXFR:
		m.SetRcode(r, mdns.RcodeRefused) // no zone transfers: every node serves the zone itself
	case z == nil:
		m.SetRcode(r, mdns.RcodeServerFailure) // not published yet
	default:
		if !z.Answer(m, r.Question[0]) {
			m.SetRcode(r, mdns.RcodeRefused) // not our zone
		}
	}
	if opt != nil {
		m.SetEdns0(ednsSize, false)
	}
	m.Truncate(size)
	return m
}

// orderSRV puts SRV records in the order RFC 2782's selection would pick them:
// by priority, and within one priority a weighted random draw. A client that
// ignores weights and takes the records as they come still follows them.
func orderSRV(rrs []mdns.RR) {
	var srv []*mdns.SRV
	for _, rr := range rrs {
		s, ok := rr.(*mdns.SRV)
		if !ok {
			return
		}
		srv = append(srv, s)
	}
	sort.SliceStable(srv, func(i, j int) bool { return srv[i].Priority < srv[j].Priority })
	out := make([]*mdns.SRV, 0, len(srv))
	for i := 0; i < len(srv); {
		j := i
		for j < len(srv) && srv[j].Priority == srv[i].Priority {
			j++
		}
		group := append([]*mdns.SRV(nil), srv[i:j]...)
		for len(group) > 0 {
			total := 0
			for _, s := range group {
				total += int(s.Weight)
			}
			k := 0
			if total > 0 {
				x := rand.IntN(total + 1) // RFC 2782: 0..sum inclusive; weight-0 records first only when x is 0
				run := 0
				for k = range group {
					run += int(group[k].Weight)
					if run >= x {
						break
					}
				}
			} else {
				k = rand.IntN(len(group))
			}
			out = append(out, group[k])
			group = append(group[:k], group[k+1:]...)
		}
		i = j
	}
	for i := range out {
		rrs[i] = out[i]
	}
}
