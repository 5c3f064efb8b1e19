package pxe

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var mac1 = net.HardwareAddr{0x52, 0x54, 0, 0x77, 1, 1}

func discover(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(mac1, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ipxeMods() []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")),
		dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{177, 5, 1, 0x1a, 0xf4, 0x10, 0}),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
	}
}

func legacyMods(arch iana.Arch) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
	}
}

func plan(mode string) *dhcpPlan {
	return &dhcpPlan{mode: mode, serverIP: netip.MustParseAddr("10.77.0.1"),
		pool: &Pool{Prefix: netip.MustParsePrefix("10.77.0.0/24"), First: netip.MustParseAddr("10.77.0.100"),
			Last: netip.MustParseAddr("10.77.0.101"), Lease: time.Hour},
		bootURL: "http://10.77.0.1/boot.ipxe", tftp: true, now: time.Now, domain: "lab.example"}
}

func TestClassify(t *testing.T) {
	if c := Classify(discover(t, ipxeMods()...)); !c.PXE || !c.IPXE || c.Arch != iana.INTEL_X86PC {
		t.Fatalf("iPXE: %+v", c)
	}
	if c := Classify(discover(t, legacyMods(iana.EFI_X86_64)...)); !c.PXE || c.IPXE || c.Arch != iana.EFI_X86_64 {
		t.Fatalf("legacy EFI: %+v", c)
	}
	if c := Classify(discover(t)); c.PXE || c.IPXE {
		t.Fatalf("plain client: %+v", c)
	}
}

func TestFullIPXEOffer(t *testing.T) {
	p := plan(ModeFull)
	r, err := p.reply(discover(t, ipxeMods()...), false)
	if err != nil || r == nil {
		t.Fatalf("reply %v %v", r, err)
	}
	if r.MessageType() != dhcpv4.MessageTypeOffer || r.YourIPAddr.String() != "10.77.0.100" {
		t.Fatalf("offer %s", r.Summary())
	}
	if r.BootFileNameOption() != "http://10.77.0.1/boot.ipxe" {
		t.Fatalf("boot file %q", r.BootFileNameOption())
	}
	// iPXE must not wait for ProxyDHCP offers: option 175 carries 176 = 1.
	if got := r.GetOneOption(dhcpv4.GenericOptionCode(175)); string(got) != string([]byte{176, 1, 1}) {
		t.Fatalf("option 175 = %v", got)
	}
	if r.DomainName() != "lab.example" {
		t.Fatalf("domain %q", r.DomainName())
	}
	// The same MAC keeps its address; a REQUEST for another is refused.
	req, _ := dhcpv4.NewRequestFromOffer(r)
	ack, _ := p.reply(req, false)
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.YourIPAddr.String() != "10.77.0.100" {
		t.Fatalf("ack %s", ack.Summary())
	}
	req.UpdateOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.77.0.101")))
	if nak, _ := p.reply(req, false); nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("want NAK, got %s", nak.Summary())
	}
}

func TestFullLegacyAndPlain(t *testing.T) {
	p := plan(ModeFull)
	r, _ := p.reply(discover(t, legacyMods(iana.INTEL_X86PC)...), false)
	if r.BootFileNameOption() != "undionly.kpxe" || r.ServerIPAddr.String() != "10.77.0.1" {
		t.Fatalf("legacy BIOS: file %q next-server %s", r.BootFileNameOption(), r.ServerIPAddr)
	}
	if r.GetOneOption(dhcpv4.GenericOptionCode(175)) != nil {
		t.Fatal("legacy firmware got iPXE's option 175")
	}
	m := discover(t)
	m.ClientHWAddr = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	r, _ = p.reply(m, false)
	if r.BootFileNameOption() != "" || r.YourIPAddr.String() != "10.77.0.101" {
		t.Fatalf("plain DHCP client: %s", r.Summary())
	}
	// Range exhausted.
	m.ClientHWAddr = net.HardwareAddr{2, 0, 0, 0, 0, 3}
	if _, err := p.reply(m, false); err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Fatalf("exhausted range: %v", err)
	}
}

func TestProxy(t *testing.T) {
	p := plan(ModeProxy)
	if r, _ := p.reply(discover(t), false); r != nil {
		t.Fatalf("proxy answered a plain DHCP client: %s", r.Summary())
	}
	r, err := p.reply(discover(t, ipxeMods()...), false)
	if err != nil || r == nil {
		t.Fatal(err)
	}
	if !r.YourIPAddr.IsUnspecified() || r.ClassIdentifier() != "PXEClient" || r.BootFileNameOption() != "http://10.77.0.1/boot.ipxe" {
		t.Fatalf("proxy offer: %s", r.Summary())
	}
	// The firmware's boot request on port 4011.
	req, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac1),
		dhcpv4.WithClientIP(net.ParseIP("192.168.1.50")))
	for _, m := range legacyMods(iana.INTEL_X86PC) {
		m(req)
	}
	ack, _ := p.reply(req, true)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileNameOption() != "undionly.kpxe" {
		t.Fatalf("proxy ack: %v", ack)
	}
	// A REQUEST to the site's DHCP server is not ours.
	req2, _ := dhcpv4.NewRequestFromOffer(r)
	req2.UpdateOption(dhcpv4.OptServerIdentifier(net.ParseIP("192.168.1.1")))
	if r, _ := p.reply(req2, false); r != nil {
		t.Fatalf("proxy answered a request to another server: %s", r.Summary())
	}
}

func TestPoolFixedAndReuse(t *testing.T) {
	p := &Pool{Prefix: netip.MustParsePrefix("10.0.0.0/24"), First: netip.MustParseAddr("10.0.0.100"), Last: netip.MustParseAddr("10.0.0.100"), Lease: time.Minute,
		Fixed: func(m net.HardwareAddr) (netip.Addr, bool) {
			if m[5] == 9 {
				return netip.MustParseAddr("10.0.0.9"), true
			}
			return netip.Addr{}, false
		}}
	now := time.Now()
	if a, _ := p.Addr(net.HardwareAddr{2, 0, 0, 0, 0, 9}, now); a.String() != "10.0.0.9" {
		t.Fatalf("fixed: %s", a)
	}
	if a, _ := p.Addr(net.HardwareAddr{2, 0, 0, 0, 0, 1}, now); a.String() != "10.0.0.100" {
		t.Fatalf("pool: %s", a)
	}
	if _, err := p.Addr(net.HardwareAddr{2, 0, 0, 0, 0, 2}, now); err == nil {
		t.Fatal("full range gave an address")
	}
	if a, err := p.Addr(net.HardwareAddr{2, 0, 0, 0, 0, 2}, now.Add(2*time.Minute)); err != nil || a.String() != "10.0.0.100" {
		t.Fatalf("expired lease not reused: %s %v", a, err)
	}
}

func TestHTTPScriptParamsSeeds(t *testing.T) {
	dir := t.TempDir()
	k, i := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs.cpio.xz")
	os.WriteFile(k, []byte("KERNEL"), 0o644)
	os.WriteFile(i, []byte("INITRD"), 0o644)
	reg := &registry{}
	h := &httpHandler{boot: Boot{Kernel: k, Initrd: i, Cmdline: "console=ttyS0", AutoSeeds: true,
		Params: map[string]string{"domain": "lab.example", "key": "k e y-0123456789abcdef"},
		NodeParams: func(b BoxInfo) map[string]string {
			return map[string]string{"storage": "iscsi://10.77.0.1/iqn.x:" + b.MAC}
		}},
		baseURL: "http://10.77.0.1/", reg: reg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now}
	get := func(path, from string) string {
		r := httptest.NewRequest("GET", path, nil)
		r.RemoteAddr = from + ":40000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			t.Fatalf("GET %s: %d", path, w.Code)
		}
		return w.Body.String()
	}
	s := get("/boot.ipxe", "10.77.0.11")
	for _, want := range []string{"#!ipxe\n", "kernel http://10.77.0.1/vmlinuz initrd=initramfs.cpio.xz console=ttyS0 xedge.boot=http://10.77.0.1/\n", "initrd http://10.77.0.1/initramfs.cpio.xz\n", "boot\n"} {
		if !strings.Contains(s, want) {
			t.Fatalf("script lacks %q:\n%s", want, s)
		}
	}
	if get("/vmlinuz", "10.77.0.11") != "KERNEL" || get("/initramfs.cpio.xz", "10.77.0.11") != "INITRD" || get("/initrd", "10.77.0.11") != "INITRD" {
		t.Fatal("kernel or initrd content")
	}
	p1 := get("/params?mac=52:54:00:77:01:01", "10.77.0.11")
	if strings.Contains(p1, "seeds") || !strings.Contains(p1, `xedge.key="k e y-0123456789abcdef"`) || !strings.Contains(p1, "xedge.domain=lab.example\n") ||
		!strings.Contains(p1, "xedge.storage=iscsi://10.77.0.1/iqn.x:52:54:00:77:01:01") {
		t.Fatalf("first box params:\n%s", p1)
	}
	p2 := get("/params?mac=52:54:00:77:01:02", "10.77.0.12")
	if !strings.Contains(p2, "xedge.seeds=10.77.0.11\n") {
		t.Fatalf("second box params:\n%s", p2)
	}
	p3 := get("/params?mac=52:54:00:77:01:03", "10.77.0.13")
	if !strings.Contains(p3, "xedge.seeds=10.77.0.11,10.77.0.12\n") {
		t.Fatalf("third box params:\n%s", p3)
	}
	// A box that reboots joins the others (it never bootstraps a second cluster).
	if p1 = get("/params?mac=52:54:00:77:01:01", "10.77.0.11"); !strings.Contains(p1, "xedge.seeds=10.77.0.12,10.77.0.13\n") {
		t.Fatalf("first box again:\n%s", p1)
	}
	boxes := get("/boxes", "127.0.0.1")
	if !strings.Contains(boxes, `"mac":"52:54:00:77:01:02"`) || !strings.Contains(boxes, `"kernel"`) {
		t.Fatalf("boxes: %s", boxes)
	}
}

// TestHTTPSentEvents: a box's kernel-sent / initrd-sent events are recorded once
// the server wrote the whole file (over a real HTTP server, whose sendfile path
// the counting must keep), not for a request that got part of it.
func TestHTTPSentEvents(t *testing.T) {
	dir := t.TempDir()
	k, i := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs.cpio.zst")
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	os.WriteFile(k, []byte(big), 0o644)
	os.WriteFile(i, []byte(big), 0o644)
	reg := &registry{}
	h := &httpHandler{boot: Boot{Kernel: k, Initrd: i}, baseURL: "http://127.0.0.1/", reg: reg,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path, rng string) int {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return len(b)
	}
	if n := get("/initramfs.cpio.zst", "bytes=0-99"); n != 100 {
		t.Fatalf("range: %d bytes", n)
	}
	ev := func() map[string]time.Time { return reg.list()[0].Events }
	if _, ok := ev()["initrd-sent"]; ok {
		t.Fatal("initrd-sent after a partial download")
	}
	if n := get("/vmlinuz", ""); n != len(big) {
		t.Fatalf("kernel: %d bytes", n)
	}
	if n := get("/initramfs.cpio.zst", ""); n != len(big) {
		t.Fatalf("initrd: %d bytes", n)
	}
	// The client has read the last byte before the handler returns and
	// records the event: wait for it, bounded.
	var e map[string]time.Time
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		e = ev()
		missing := ""
		for _, k := range []string{"kernel", "kernel-sent", "initrd", "initrd-sent"} {
			if e[k].IsZero() {
				missing = k
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event: %v", missing, e)
		}
	}
	if e["kernel-sent"].Before(e["kernel"]) || e["initrd-sent"].Before(e["initrd"]) {
		t.Fatalf("sent before requested: %v", e)
	}
}
