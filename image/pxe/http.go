package pxe

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Boot is what the server boots boxes with.
type Boot struct {
	Kernel string // bzImage (iPXE cannot load a PVH vmlinux)
	Initrd string // initramfs (xz or plain cpio)
	// Cmdline is the base kernel command line (the image's default); the script adds
	// xedge.boot=<server URL> so the box fetches its parameters.
	Cmdline string
	// Params are the site's xedge parameters (keys without "xedge."), served to every
	// box at /params: domain, key, storage, ...
	Params map[string]string
	// NodeParams, when set, adds per-box parameters (a site's per-box LUN, say); it
	// may override Params. The box itself needs no configuration either way.
	NodeParams func(b BoxInfo) map[string]string
	// AutoSeeds gives each box, when Params has no "seeds", the addresses of the other
	// boxes that fetched their parameters (at most MaxSeeds, oldest first): the first
	// box bootstraps the cluster, every later or rebooting box joins it.
	AutoSeeds bool
	MaxSeeds  int
	// Files are served as they are at /<name> (e.g. an xmppd YAML config that the
	// parameters point to with config=<URL>).
	Files map[string][]byte
}

// BoxInfo is what the server knows of one box it booted.
type BoxInfo struct {
	MAC string `json:"mac"`
	IP  string `json:"ip,omitempty"`
	// Events: dhcp, script, kernel, kernel-sent, initrd, initrd-sent, params (a
	// file's -sent event is when the server wrote its last byte: how long a box's
	// firmware took to download it).
	Events map[string]time.Time `json:"events"`
	seq    int                  // order of the first params fetch (0: none)
}

// registry records the boxes seen, by MAC (by IP before the MAC is known).
type registry struct {
	mu    sync.Mutex
	boxes map[string]*BoxInfo
	seq   int
}

func (r *registry) note(mac, ip, event string, now time.Time) BoxInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.boxes == nil {
		r.boxes = map[string]*BoxInfo{}
	}
	key := mac
	if key == "" {
		key = r.macOf(ip)
	}
	if key == "" {
		key = "ip:" + ip
	}
	b := r.boxes[key]
	if old, ok := r.boxes["ip:"+ip]; ok && ip != "" && mac != "" {
		delete(r.boxes, "ip:"+ip) // the MAC is known now
		if b == nil {
			b, old.MAC = old, mac
			r.boxes[key] = b
		}
	}
	if b == nil {
		b = &BoxInfo{MAC: mac, Events: map[string]time.Time{}}
		r.boxes[key] = b
	}
	if ip != "" {
		b.IP = ip
	}
	if _, ok := b.Events[event]; !ok || event == "params" && b.seq == 0 {
		b.Events[event] = now
	}
	if event == "params" && b.seq == 0 {
		r.seq++
		b.seq = r.seq
	}
	return *b
}

func (r *registry) macOf(ip string) string {
	if ip == "" {
		return ""
	}
	for k, b := range r.boxes {
		if b.IP == ip && b.MAC != "" {
			return k
		}
	}
	return ""
}

// seeds lists the addresses of the other boxes that fetched their parameters, in
// the order they first did. Only the first box ever gets none (and bootstraps); a
// box that reboots is pointed at the others, never left to bootstrap a second
// cluster.
func (r *registry) seeds(self BoxInfo, max int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var bs []*BoxInfo
	for _, b := range r.boxes {
		if b.seq > 0 && b.IP != "" && b.IP != self.IP && (self.MAC == "" || b.MAC != self.MAC) {
			bs = append(bs, b)
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].seq < bs[j].seq })
	var out []string
	for _, b := range bs {
		if max > 0 && len(out) >= max {
			break
		}
		out = append(out, b.IP)
	}
	return out
}

func (r *registry) list() []BoxInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]BoxInfo, 0, len(r.boxes))
	for _, b := range r.boxes {
		c := *b
		c.Events = map[string]time.Time{}
		for k, v := range b.Events {
			c.Events[k] = v
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

// httpHandler serves the boot script, kernel, initramfs, parameters and the box list.
type httpHandler struct {
	boot    Boot
	baseURL string // http://server:port/
	reg     *registry
	log     *slog.Logger
	now     func() time.Time
}

func (h *httpHandler) initrdName() string { return filepath.Base(h.boot.Initrd) }

// Script is the iPXE boot script.
func (h *httpHandler) Script() string {
	cmdline := strings.TrimSpace(h.boot.Cmdline + " xedge.boot=" + h.baseURL)
	return fmt.Sprintf("#!ipxe\necho xedge: booting from %s\nkernel %svmlinuz initrd=%s %s\ninitrd %s%s\nboot\n",
		h.baseURL, h.baseURL, h.initrdName(), cmdline, h.baseURL, h.initrdName())
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip := ""
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			ip = a.Unmap().String()
		}
	}
	switch p := strings.TrimPrefix(r.URL.Path, "/"); p {
	case "boot.ipxe":
		h.reg.note("", ip, "script", h.now())
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, h.Script())
	case "vmlinuz":
		h.reg.note("", ip, "kernel", h.now())
		if h.file(w, r, h.boot.Kernel) {
			h.reg.note("", ip, "kernel-sent", h.now())
		}
	case h.initrdName(), "initrd": // "initrd": a stable name for mirrors (xedge.pxe=on)
		h.reg.note("", ip, "initrd", h.now())
		if h.file(w, r, h.boot.Initrd) {
			h.reg.note("", ip, "initrd-sent", h.now())
		}
	case "params":
		mac := r.URL.Query().Get("mac")
		if hw, err := net.ParseMAC(mac); err == nil {
			mac = hw.String()
		} else {
			mac = ""
		}
		b := h.reg.note(mac, ip, "params", h.now())
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, RenderParams(h.params(b)))
		h.log.Info("pxe: parameters served", "ip", ip, "mac", mac)
	case "boxes":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(h.reg.list())
	default:
		if b, ok := h.boot.Files[p]; ok {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(b)
			return
		}
		http.NotFound(w, r)
	}
}

func (h *httpHandler) params(b BoxInfo) map[string]string {
	out := map[string]string{}
	for k, v := range h.boot.Params {
		out[k] = v
	}
	if h.boot.NodeParams != nil {
		for k, v := range h.boot.NodeParams(b) {
			out[k] = v
		}
	}
	if _, ok := out["seeds"]; !ok && h.boot.AutoSeeds {
		max := h.boot.MaxSeeds
		if max == 0 {
			max = 5
		}
		if s := h.reg.seeds(b, max); len(s) > 0 {
			out["seeds"] = strings.Join(s, ",")
		}
	}
	return out
}

// file serves path; it reports whether the whole file was written to the client.
func (h *httpHandler) file(w http.ResponseWriter, r *http.Request, path string) bool {
	f, err := os.Open(path)
	if err != nil {
		h.log.Warn("pxe: serve file", "err", err)
		http.Error(w, "not available", http.StatusNotFound)
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, "not available", http.StatusNotFound)
		return false
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", st.ModTime(), f)
	return r.Method != http.MethodHead && cw.n == st.Size()
}

// countingWriter counts the body bytes written; ReadFrom keeps the server's
// sendfile path.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(src)
		c.n += n
		return n, err
	}
	n, err := io.Copy(struct{ io.Writer }{c}, src)
	return n, err
}

// RenderParams writes parameters in kernel command line syntax, one a line, sorted,
// values with spaces quoted: what init's config parser reads.
func RenderParams(p map[string]string) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v := p[k]
		if strings.ContainsAny(v, " \t\n\"") {
			v = `"` + strings.ReplaceAll(strings.ReplaceAll(v, `"`, ""), "\n", " ") + `"`
		}
		fmt.Fprintf(&b, "xedge.%s=%s\n", k, v)
	}
	return b.String()
}
