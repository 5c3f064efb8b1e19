package pxe

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"pack.ag/tftp"
)

// Server is the PXE server: New -> Start -> Stop.
type Server struct {
	cfg  Config
	plan *dhcpPlan
	reg  *registry
	h    *httpHandler

	httpSrv  *http.Server
	httpLn   net.Listener
	dhcp     []*server4.Server
	tftpSrv  *tftp.Server
	tftpLn   *net.UDPConn
	ra       *advertiser
	wg       sync.WaitGroup
	cancel   context.CancelFunc
	stopping atomic.Bool
}

// New checks the configuration; Start opens the sockets.
func New(cfg Config) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	for _, f := range []string{cfg.Boot.Kernel, cfg.Boot.Initrd} {
		if _, err := os.Stat(f); f != "" && err != nil {
			return nil, fmt.Errorf("pxe: %w", err)
		}
	}
	return &Server{cfg: cfg, reg: &registry{}}, nil
}

// URL is where the boot script, kernel and parameters are served.
func (s *Server) URL() string { return URL(s.cfg.ServerIP, s.cfg.HTTPPort) }

// Boxes lists the boxes the server has seen.
func (s *Server) Boxes() []BoxInfo { return s.reg.list() }

// SetBootOffers turns the boot information in DHCP answers on or off (addresses and
// HTTP are served either way): e.g. to let another server on the segment — a node
// with xedge.pxe=on — boot the next box.
func (s *Server) SetBootOffers(on bool) { s.plan.noBoot.Store(!on) }

// Script is the iPXE boot script served at boot.ipxe.
func (s *Server) Script() string { return s.h.Script() }

// Start opens every socket before it returns (so a caller may run it on a thread
// switched into a network namespace), then serves in the background until Stop.
func (s *Server) Start(ctx context.Context) (err error) {
	ifi, err := net.InterfaceByName(s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("pxe: %w", err)
	}
	if !s.cfg.ServerIP.IsValid() {
		if s.cfg.ServerIP, err = firstIPv4(ifi); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil {
			s.stopping.Store(true)
			s.closeAll()
		}
	}()
	log := s.cfg.Log
	s.h = &httpHandler{boot: s.cfg.Boot, baseURL: s.URL(), reg: s.reg, log: log, now: time.Now}
	s.plan = &dhcpPlan{mode: s.cfg.Mode, serverIP: s.cfg.ServerIP, pool: s.cfg.Pool, router: s.cfg.Router, dns: s.cfg.DNS,
		domain: s.cfg.Domain, xedge: s.cfg.DHCPText, hostname: s.cfg.Hostname, bootURL: "",
		tftp: s.cfg.TFTPDir != "", now: time.Now}
	if s.cfg.Boot.Kernel != "" {
		s.plan.bootURL = s.URL() + "boot.ipxe"
	}
	ctx, s.cancel = context.WithCancel(ctx)

	// HTTP.
	if s.httpLn, err = net.Listen("tcp4", netip.AddrPortFrom(s.cfg.ServerIP, uint16(s.cfg.HTTPPort)).String()); err != nil {
		return fmt.Errorf("pxe: http: %w", err)
	}
	s.httpSrv = &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
	s.goServe("http", func() error { return s.httpSrv.Serve(s.httpLn) })

	// DHCP on 67; ProxyDHCP also on 4011 (where PXE firmware sends its boot request).
	ports := []int{dhcpv4.ServerPort}
	if s.cfg.Mode == ModeProxy {
		ports = append(ports, proxyDHCPPort)
	}
	for _, port := range ports {
		port4011 := port == proxyDHCPPort
		srv, err := server4.NewServer(s.cfg.Interface, &net.UDPAddr{IP: net.IPv4zero, Port: port},
			func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) { s.handleDHCP(conn, peer, m, port4011) })
		if err != nil {
			return fmt.Errorf("pxe: dhcp port %d on %s: %w", port, s.cfg.Interface, err)
		}
		s.dhcp = append(s.dhcp, srv)
		s.goServe(fmt.Sprintf("dhcp:%d", port), srv.Serve)
	}

	// TFTP for legacy firmware (single-port mode: every transfer on the bound socket,
	// which also keeps it in the namespace the socket was made in).
	if s.cfg.TFTPDir != "" {
		if s.tftpSrv, err = tftp.NewServer("", tftp.ServerSinglePort(true)); err != nil {
			return fmt.Errorf("pxe: tftp: %w", err)
		}
		s.tftpSrv.ReadHandler(tftpFiles{dir: s.cfg.TFTPDir, log: log})
		if s.tftpLn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(s.cfg.ServerIP, 69))); err != nil {
			return fmt.Errorf("pxe: tftp: %w", err)
		}
		s.goServe("tftp", func() error { return s.tftpSrv.Serve(s.tftpLn) })
	}

	// Router advertisements so iPXE's IPv6 autoconfiguration ends at once.
	if !s.cfg.NoRA {
		if s.ra, err = newAdvertiser(ifi, log); err != nil {
			log.Warn("pxe: no router advertisements (iPXE will wait ~13 s for IPv6 autoconfiguration)", "err", err)
			err = nil
		} else {
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.ra.run(ctx) }()
		}
	}
	log.Info("pxe: serving", "interface", s.cfg.Interface, "mode", s.cfg.Mode, "url", s.URL(), "tftp", s.cfg.TFTPDir != "", "ra", s.ra != nil)
	return nil
}

func (s *Server) goServe(name string, f func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := f(); err != nil && !s.stopping.Load() {
			s.cfg.Log.Warn("pxe: server ended", "server", name, "err", err)
		}
	}()
}

func (s *Server) handleDHCP(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4, port4011 bool) {
	reply, err := s.plan.reply(m, port4011)
	if err != nil {
		s.cfg.Log.Warn("pxe: dhcp", "mac", m.ClientHWAddr.String(), "err", err)
		return
	}
	if reply == nil {
		return
	}
	ip := ""
	if !reply.YourIPAddr.IsUnspecified() {
		ip = reply.YourIPAddr.String()
	}
	c := Classify(m)
	s.reg.note(m.ClientHWAddr.String(), ip, "dhcp", time.Now())
	s.cfg.Log.Info("pxe: dhcp", "type", reply.MessageType().String(), "mac", m.ClientHWAddr.String(), "addr", ip, "pxe", c.PXE, "ipxe", c.IPXE, "file", reply.BootFileNameOption())
	var dst net.Addr = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	switch {
	case port4011:
		dst = peer
	case m.GatewayIPAddr != nil && !m.GatewayIPAddr.IsUnspecified():
		dst = &net.UDPAddr{IP: m.GatewayIPAddr, Port: dhcpv4.ServerPort}
	case m.ClientIPAddr != nil && !m.ClientIPAddr.IsUnspecified() && !m.IsBroadcast():
		dst = &net.UDPAddr{IP: m.ClientIPAddr, Port: dhcpv4.ClientPort}
	}
	if _, err := conn.WriteTo(reply.ToBytes(), dst); err != nil {
		s.cfg.Log.Warn("pxe: dhcp send", "to", dst, "err", err)
	}
}

// Stop closes every socket and waits for the servers to end.
func (s *Server) Stop(ctx context.Context) error {
	s.stopping.Store(true)
	if s.cancel != nil {
		s.cancel()
	}
	s.closeAll()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) closeAll() {
	if s.ra != nil {
		s.ra.close()
	}
	if s.httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.httpSrv.Shutdown(sctx)
		cancel()
	} else if s.httpLn != nil {
		s.httpLn.Close()
	}
	for _, d := range s.dhcp {
		_ = d.Close()
	}
	if s.tftpSrv != nil {
		_ = s.tftpSrv.Close()
	}
	if s.tftpLn != nil {
		_ = s.tftpLn.Close()
	}
}

func firstIPv4(ifi *net.Interface) (netip.Addr, error) {
	as, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("pxe: addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("pxe: %s has no IPv4 address", ifi.Name)
}

// tftpFiles serves the files of one directory by base name, read-only.
type tftpFiles struct {
	dir string
	log interface {
		Info(string, ...any)
		Warn(string, ...any)
	}
}

func (t tftpFiles) ServeTFTP(r tftp.ReadRequest) {
	name := strings.TrimLeft(r.Name(), "/")
	if name == "" || strings.Contains(name, "..") || strings.ContainsAny(name, "\\") {
		r.WriteError(tftp.ErrCodeAccessViolation, "bad file name")
		return
	}
	f, err := os.Open(filepath.Join(t.dir, filepath.Clean(name)))
	if err != nil {
		t.log.Warn("pxe: tftp", "file", name, "from", r.Addr(), "err", err)
		r.WriteError(tftp.ErrCodeFileNotFound, "no such file")
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		r.WriteSize(st.Size())
	}
	n, err := io.Copy(r, f)
	t.log.Info("pxe: tftp", "file", name, "to", r.Addr(), "bytes", n, "err", err)
}
